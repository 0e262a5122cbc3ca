"""What launch/carla_live.launch.py computes, as plain functions (no `launch` import) so tests call the same code.

seg_node gets seg.launch.py's treatment (launch_setup.resolve_parameters: an explicit launch argument wins, then
the params file, then the launch default, then the node's default); seg_eval_node gets the topics that connect it
to that seg_node and to the semantic camera of the same vehicle, and the ground-truth decoding of the chosen source.
"""
from __future__ import annotations

from carla_seg_ros.ros.launch_setup import full_name, parse_bool, resolve_parameters
from carla_seg_ros.runtime.model_ladder import MODEL_CHOICES

GT_SOURCES = {   # gt_source -> (seg_eval_node gt_format, coding, `carla-seg carla --ros`)
    "bridge": ("palette", "auto", "client"),     # CityScapes colours; the coding is told apart by its palette
    "native": ("ids", "tags29", "native"),       # CARLA 0.9.16 --ros2: raw tag ids in the red channel, 29 tags
}
ARGUMENTS = (   # name, default, description; the first ones are seg.launch.py's, with its defaults
    ("role_name", "ego_vehicle", "CARLA vehicle role name"),
    ("camera", "rgb_front", "CARLA camera sensor name"),
    ("params_file", None, "seg_node parameters (ros__parameters YAML); default config/seg.yaml. Its values win "
                          "over the launch defaults, launch arguments given explicitly win over it"),
    ("backend", "", "auto | tensorrt | onnxruntime | openvino | torch | torch_cuda (empty: the params file's)"),
    ("model", "", "auto | accurate | fast | /path/model.onnx (empty: the params file's; config/seg.yaml: auto)"),
    ("namespace", "", "namespace of seg_node and seg_eval_node"),
    ("use_sim_time", "", "use CARLA's /clock (the bridge and the client stamp images in sim time); empty: the "
                         "params file's, else true"),
    ("dds_profile", None, "Fast DDS XML profile for seg_node's process (default: config/fastdds_large_frames.xml, "
                          "compatible with default-configured peers; '' = Fast DDS defaults)"),
    ("gt_camera", "semantic_segmentation_front", "CARLA semantic camera with the camera's size and pose"),
    ("gt_source", "bridge", "bridge: palette colours (ROS bridge, or `carla-seg carla`); native: CARLA 0.9.16's "
                            "own --ros2 publisher (raw tag ids)"),
    ("output_dir", "runs/seg_eval", "folder for seg_eval_node's metrics.json and report"),
    ("timely_budget", "0.05", "seconds after a ground-truth stamp at which the planner reads the newest mask"),
    ("start_client", "false", "also start `carla-seg carla` (spawns the ego vehicle and both cameras)"),
    ("host", "127.0.0.1", "CARLA server host (start_client)"),
    ("port", "2000", "CARLA server port (start_client)"),
    ("town", "", "map to load (start_client); empty keeps the current one"),
)


def node_settings(values: dict) -> dict:
    """Launch-argument values (strings) -> what each process gets."""
    namespace, role = values["namespace"], values["role_name"]
    if values["gt_source"] not in GT_SOURCES:
        raise ValueError(f"launch argument gt_source:={values['gt_source']!r} is not one of "
                         f"{', '.join(GT_SOURCES)}")
    gt_format, coding, client_ros = GT_SOURCES[values["gt_source"]]
    seg = resolve_parameters(values["params_file"], {"backend": values["backend"], "model": values.get("model", ""),
                                                     "use_sim_time": values["use_sim_time"]},
                             namespace=namespace, node_name="seg_node")
    evaluator = {"mask_topic": f"{full_name(namespace, 'seg_node')}/mask",
                 "gt_topic": f"/carla/{role}/{values['gt_camera']}/image",
                 "gt_format": gt_format, "coding": coding, "output_dir": values["output_dir"],
                 "timely_budget": float(values["timely_budget"]),
                 "use_sim_time": bool(seg.get("use_sim_time", True))}
    model_file = seg.get("model_path") or (seg.get("model") if seg.get("model") not in (None, "", *MODEL_CHOICES)
                                           else None)
    if model_file:
        evaluator["model_path"] = model_file            # the class table and hood rule of the model in use
    client = None
    if parse_bool("start_client", values["start_client"]):
        client = ["carla", "--host", values["host"], "--port", str(int(values["port"])), "--role", role,
                  "--ros", client_ros] + (["--town", values["town"]] if values["town"] else [])
    return {"namespace": namespace, "seg_node": seg, "seg_topic": f"/carla/{role}/{values['camera']}/image",
            "odometry_topic": f"/carla/{role}/odometry",          # the local map's poses
            "seg_eval_node": evaluator, "client_args": client,
            "env": {"FASTDDS_DEFAULT_PROFILES_FILE": values["dds_profile"]} if values["dds_profile"] else None}
