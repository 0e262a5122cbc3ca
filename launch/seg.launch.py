r"""Launch seg_node next to the CARLA ROS bridge.

    ros2 launch carla_seg_ros seg.launch.py                                 # /carla/ego_vehicle/rgb_front/image
    ros2 launch carla_seg_ros seg.launch.py role_name:=hero camera:=rgb_left backend:=onnxruntime
    ros2 launch carla_seg_ros seg.launch.py model:=fast        # the ladder's fast rung (default: params file: auto)
    ros2 launch carla_seg_ros seg.launch.py use_sim_time:=false params_file:=/path/my_seg.yaml
    ros2 launch carla_seg_ros seg.launch.py cameras:=rgb_front,rgb_left,rgb_right rviz:=true   # one node, 3 cameras
    ros2 launch carla_seg_ros seg.launch.py managed:=true      # lifecycle node: ros2 lifecycle set /seg_node configure

Parameter precedence: a launch argument given on the command line wins; otherwise the params file's value;
otherwise the launch default (use_sim_time: true); otherwise the node's own default. backend, model and use_sim_time
default to "" = "not given", so a params file saying `backend: onnxruntime` is obeyed. config/seg.yaml says
`model: auto`: the node times the model ladder's rungs at startup and runs the most accurate one that fits 20 Hz.
Params file sections named `seg_node:` (relative) apply under any namespace:=, like `/**:` (the shipped
config/seg.yaml).

seg_node runs with config/fastdds_large_frames.xml (dds_profile; the default transports with 32 MB buffers, which
still match a CARLA bridge on Fast DDS defaults). The big gain is on the bridge's side, which this file does not
start: export FASTDDS_DEFAULT_PROFILES_FILE=<share>/config/fastdds_large_frames.xml before starting the bridge
(see docs/concepts/pipeline.md). dds_profile:='' runs seg_node on Fast DDS defaults.

Outputs: /<namespace>/seg_node/{mask,mask_color,overlay,confidence,class_fractions,label_info,occupancy,
occupancy/<group>,points} (with cameras:= /<namespace>/seg_node/<camera>/...), /<namespace>/seg_node/local_map
(+ local_map/<group>: every camera fused with /carla/<role_name>/odometry, remapped here) and /diagnostics.
The occupancy grids also need each camera's camera_info (the single camera's is remapped here; with cameras:= it
is the image topic's sibling .../camera_info) and the camera mount parameters (camera_x ... camera_yaw;
docs/concepts/occupancy.md).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node

from carla_seg_ros.ros.launch_setup import (camera_topics, full_name, parse_bool, require_rviz, resolve_parameters,
                                            write_params_file, write_rviz_config)

PACKAGE = "carla_seg_ros"
NODE_NAME = "seg_node"


def _launch_setup(context):
    """Runs once the arguments are known: everything is plain Python strings here (no pasted expressions)."""
    share = get_package_share_directory(PACKAGE)

    def arg(name):
        return LaunchConfiguration(name).perform(context)

    # Every check before any action exists: an exception here starts nothing, while one raised when an action
    # runs (launch_ros's own rviz2 lookup) left the seg_node started before it running without a parent.
    rviz = parse_bool("rviz", arg("rviz"))
    if rviz:
        require_rviz()
    namespace = arg("namespace")
    params = resolve_parameters(arg("params_file"), {"backend": arg("backend"), "model": arg("model"),
                                                     "use_sim_time": arg("use_sim_time")},
                                namespace=namespace, node_name=NODE_NAME)
    cameras = camera_topics(arg("cameras"), arg("role_name"))
    single_topic = f"/carla/{arg('role_name')}/{arg('camera')}/image"
    if cameras:
        params["cameras"] = [topic for _, topic in cameras]
    params_path = write_params_file(params)
    profile = arg("dds_profile")
    node_args = dict(
        package=PACKAGE, executable="seg_node", name=NODE_NAME, namespace=namespace, output="screen",
        emulate_tty=True, parameters=[str(params_path)],
        remappings=[("image", single_topic), ("camera_info", single_topic[:-len("image")] + "camera_info"),
                    ("odometry", f"/carla/{arg('role_name')}/odometry")],     # the local map's poses
        additional_env={"FASTDDS_DEFAULT_PROFILES_FILE": profile} if profile else None,
    )
    if arg("depth_camera"):     # the single camera's aligned depth camera (with cameras:=, remap <camera>/depth)
        node_args["remappings"].append(("depth", f"/carla/{arg('role_name')}/{arg('depth_camera')}/image"))
    if parse_bool("managed", arg("managed")):
        actions = [LifecycleNode(arguments=["--managed"], **node_args)]
    else:
        actions = [Node(**node_args)]
    if rviz:
        views = cameras or [("", single_topic)]
        config = write_rviz_config(os.path.join(share, "config", "seg.rviz"), views, full_name(namespace, NODE_NAME))
        actions.append(Node(package="rviz2", executable="rviz2", name="seg_rviz", arguments=["-d", str(config)],
                            parameters=[str(write_params_file({"use_sim_time": params.get("use_sim_time", True)},
                                                              node_name="seg_rviz"))], output="screen"))
    return actions


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    args = [
        DeclareLaunchArgument("role_name", default_value="ego_vehicle", description="CARLA vehicle role name"),
        DeclareLaunchArgument("camera", default_value="rgb_front", description="CARLA camera sensor name"),
        DeclareLaunchArgument("cameras", default_value="",
                              description="several cameras in one node, e.g. rgb_front,rgb_left: subscribes "
                                          "/carla/<role_name>/<camera>/image each, batches them into one inference "
                                          "and publishes ~/<camera>/mask etc. (empty: the single `camera`)"),
        DeclareLaunchArgument("depth_camera", default_value="",
                              description="CARLA depth camera aligned with `camera` (e.g. depth_front): its 32FC1 "
                                          "image gives ~/points metric depth (empty: ground-plane points)"),
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "seg.yaml"),
                              description="seg_node parameters (ros__parameters YAML); its values win over the "
                                          "launch defaults, launch arguments given explicitly win over it"),
        DeclareLaunchArgument("backend", default_value="",
                              description="auto | tensorrt | onnxruntime | openvino | torch | torch_cuda "
                                          "(empty: the params file's, else auto)"),
        DeclareLaunchArgument("model", default_value="",
                              description="auto | accurate | fast | /path/model.onnx (empty: the params file's, "
                                          "config/seg.yaml: auto = the most accurate rung that fits the frame "
                                          "budget, timed at startup)"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of seg_node"),
        DeclareLaunchArgument("use_sim_time", default_value="",
                              description="use the CARLA bridge's /clock (the bridge stamps images in sim time); "
                                          "empty: the params file's, else true"),
        DeclareLaunchArgument("dds_profile",
                              default_value=os.path.join(share, "config", "fastdds_large_frames.xml"),
                              description="Fast DDS XML profile for seg_node's process (default: the large-frame "
                                          "profile, compatible with default-configured peers; '' = Fast DDS "
                                          "defaults)"),
        DeclareLaunchArgument("managed", default_value="false",
                              description="true: run seg_node as a lifecycle node (configure/activate through "
                                          "its lifecycle services, e.g. `ros2 lifecycle set /seg_node configure`)"),
        DeclareLaunchArgument("rviz", default_value="false",
                              description="true: also start rviz2 showing camera, overlay, colour mask and occupancy "
                                          "grid of every camera, with a config generated for role/camera(s)/namespace"),
    ]
    return LaunchDescription(args + [OpaqueFunction(function=_launch_setup)])
