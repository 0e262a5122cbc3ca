r"""Live accuracy run: seg_node + seg_eval_node on one CARLA camera, optionally with the `carla-seg carla` client.

    # next to the CARLA ROS bridge, with the matching sensor file (config/carla_objects.json; docs/tutorials/bridge.md)
    ros2 launch carla_seg_ros carla_live.launch.py
    ros2 launch carla_seg_ros carla_live.launch.py role_name:=hero backend:=onnxruntime output_dir:=/tmp/run1
    # no bridge: this package's client drives a CARLA 0.9.16 server and publishes like the bridge
    ros2 launch carla_seg_ros carla_live.launch.py start_client:=true town:=Town10HD_Opt
    # CARLA 0.9.16 started with --ros2 publishes the cameras itself (raw tag ids in the semantic image)
    ros2 launch carla_seg_ros carla_live.launch.py start_client:=true gt_source:=native

Arguments shared with seg.launch.py keep their names, defaults and precedence (role_name, camera, params_file,
backend, namespace, use_sim_time, dds_profile): a launch argument given on the command line wins, then the params
file, then the launch default. The values are turned into node settings by plain Python
(carla_seg_ros.ros.live_launch.node_settings; no string pasting into PythonExpression), called from an
OpaqueFunction once they are known.

seg_eval_node writes metrics.json + report.md + report.html to ``output_dir`` when the launch is stopped, and on
``ros2 service call /<namespace>/seg_eval_node/write_report std_srvs/srv/Trigger``.
"""
import os

from ament_index_python.packages import get_package_prefix, get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from carla_seg_ros.ros.launch_setup import write_params_file
from carla_seg_ros.ros.live_launch import ARGUMENTS, node_settings

PACKAGE = "carla_seg_ros"


def _launch_setup(context):
    values = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    s = node_settings(values)
    actions = [
        Node(package=PACKAGE, executable="seg_node", name="seg_node", namespace=s["namespace"], output="screen",
             emulate_tty=True, parameters=[str(write_params_file(s["seg_node"]))],
             remappings=[("image", s["seg_topic"]),       # camera_info: for the occupancy grids
                         ("camera_info", s["seg_topic"][:-len("image")] + "camera_info"),
                         ("odometry", s["odometry_topic"])],           # ~/local_map
             additional_env=s["env"]),
        Node(package=PACKAGE, executable="seg_eval_node", name="seg_eval_node", namespace=s["namespace"],
             output="screen", emulate_tty=True,
             parameters=[str(write_params_file(s["seg_eval_node"], node_name="seg_eval_node"))]),
    ]
    if s["client_args"] is not None:
        # colcon installs console scripts under lib/<package> (setup.cfg), which is not on PATH.
        exe = os.path.join(get_package_prefix(PACKAGE), "lib", PACKAGE, "carla-seg")
        actions.append(ExecuteProcess(cmd=[exe] + s["client_args"], name="carla_client", output="screen"))
    return actions


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    defaults = {"params_file": os.path.join(share, "config", "seg.yaml"),
                "dds_profile": os.path.join(share, "config", "fastdds_large_frames.xml")}
    args = [DeclareLaunchArgument(name, default_value=defaults.get(name, default), description=description)
            for name, default, description in ARGUMENTS]
    return LaunchDescription(args + [OpaqueFunction(function=_launch_setup)])
