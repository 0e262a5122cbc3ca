r"""Live accuracy run: seg_node + seg_eval_node on one CARLA camera, optionally with the `carla-seg carla` client.

    # next to the CARLA ROS bridge, with the matching sensor file (config/carla_objects.json, see docs/live.md)
    ros2 launch carla_seg_ros carla_live.launch.py
    ros2 launch carla_seg_ros carla_live.launch.py role_name:=hero backend:=onnxruntime output_dir:=/tmp/run1
    # no bridge: this package's client drives a CARLA 0.9.16 server and publishes like the bridge
    ros2 launch carla_seg_ros carla_live.launch.py start_client:=true town:=Town10HD_Opt
    # CARLA 0.9.16 started with --ros2 publishes the cameras itself (raw tag ids in the semantic image)
    ros2 launch carla_seg_ros carla_live.launch.py start_client:=true gt_source:=native

Arguments shared with seg.launch.py keep their names and defaults (role_name, camera, params_file, backend,
namespace, use_sim_time, dds_profile); values given on the command line override the params file. The launch
arguments are turned into node settings by plain Python in ``node_settings`` (no string pasting into
PythonExpression), called from an OpaqueFunction once the values are known.

seg_eval_node writes metrics.json + report.md + report.html to ``output_dir`` when the launch is stopped, and on
``ros2 service call /<namespace>/seg_eval_node/write_report std_srvs/srv/Trigger``.
"""
import os

from ament_index_python.packages import get_package_prefix, get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "carla_seg_ros"
GT_SOURCES = {   # gt_source -> (seg_eval_node gt_format, coding, `carla-seg carla --ros`)
    "bridge": ("palette", "auto", "client"),     # CityScapes colours; the coding is told apart by its palette
    "native": ("ids", "tags29", "native"),       # CARLA 0.9.16 --ros2: raw tag ids in the red channel, 29 tags
}
ARGUMENTS = (   # name, default, description
    ("role_name", "ego_vehicle", "CARLA vehicle role name"),
    ("camera", "rgb_front", "CARLA camera sensor name"),
    ("params_file", None, "seg_node parameters (ros__parameters YAML); default config/seg.yaml"),
    ("backend", "auto", "auto | tensorrt | onnxruntime | openvino | torch | torch_cuda"),
    ("namespace", "", "namespace of seg_node and seg_eval_node"),
    ("use_sim_time", "true", "use CARLA's /clock (the bridge and the client stamp images in sim time)"),
    ("dds_profile", "", "Fast DDS XML profile for seg_node's process (e.g. config/fastdds_large_frames.xml)"),
    ("gt_camera", "semantic_segmentation_front", "CARLA semantic camera with the camera's size and pose"),
    ("gt_source", "bridge", "bridge: palette colours (ROS bridge, or the client); native: CARLA 0.9.16 --ros2"),
    ("output_dir", "runs/seg_eval", "folder for seg_eval_node's metrics.json and report"),
    ("timely_budget", "0.05", "seconds after a ground-truth stamp at which the planner reads the newest mask"),
    ("start_client", "false", "also start `carla-seg carla` (spawns the ego vehicle and both cameras)"),
    ("host", "127.0.0.1", "CARLA server host (start_client)"),
    ("port", "2000", "CARLA server port (start_client)"),
    ("town", "", "map to load (start_client); empty keeps the current one"),
)


def _flag(value: str) -> bool:
    if value.lower() not in ("true", "false", "1", "0"):
        raise ValueError(f"expected true or false, got {value!r}")
    return value.lower() in ("true", "1")


def node_settings(values: dict) -> dict:
    """Launch-argument values (strings) -> what each process gets. Plain Python, so tests can call it."""
    ns = values["namespace"].strip("/")
    prefix = f"/{ns}" if ns else ""
    role, sim = values["role_name"], _flag(values["use_sim_time"])
    if values["gt_source"] not in GT_SOURCES:
        raise ValueError(f"gt_source must be one of {', '.join(GT_SOURCES)}, got {values['gt_source']!r}")
    gt_format, coding, client_ros = GT_SOURCES[values["gt_source"]]
    seg = {"remappings": [("image", f"/carla/{role}/{values['camera']}/image")],
           "parameters": [values["params_file"], {"backend": values["backend"], "use_sim_time": sim}],
           "env": {"FASTDDS_DEFAULT_PROFILES_FILE": values["dds_profile"]} if values["dds_profile"] else {}}
    evaluator = {"parameters": [{
        "mask_topic": f"{prefix}/seg_node/mask",
        "gt_topic": f"/carla/{role}/{values['gt_camera']}/image",
        "gt_format": gt_format, "coding": coding, "output_dir": values["output_dir"],
        "timely_budget": float(values["timely_budget"]), "use_sim_time": sim}]}
    client = None
    if _flag(values["start_client"]):
        client = ["carla", "--host", values["host"], "--port", str(int(values["port"])), "--role", role,
                  "--ros", client_ros] + (["--town", values["town"]] if values["town"] else [])
    return {"namespace": ns, "seg_node": seg, "seg_eval_node": evaluator, "client_args": client}


def _launch_setup(context):
    values = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    s = node_settings(values)
    actions = [
        Node(package=PACKAGE, executable="seg_node", name="seg_node", namespace=s["namespace"], output="screen",
             emulate_tty=True, parameters=s["seg_node"]["parameters"], remappings=s["seg_node"]["remappings"],
             additional_env=s["seg_node"]["env"]),
        Node(package=PACKAGE, executable="seg_eval_node", name="seg_eval_node", namespace=s["namespace"],
             output="screen", emulate_tty=True, parameters=s["seg_eval_node"]["parameters"]),
    ]
    if s["client_args"] is not None:
        # colcon installs console scripts under lib/<package> (setup.cfg), which is not on PATH.
        exe = os.path.join(get_package_prefix(PACKAGE), "lib", PACKAGE, "carla-seg")
        actions.append(ExecuteProcess(cmd=[exe] + s["client_args"], name="carla_client", output="screen"))
    return actions


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    defaults = {"params_file": os.path.join(share, "config", "seg.yaml")}
    args = [DeclareLaunchArgument(name, default_value=defaults.get(name, default), description=description)
            for name, default, description in ARGUMENTS]
    return LaunchDescription(args + [OpaqueFunction(function=_launch_setup)])
