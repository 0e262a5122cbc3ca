r"""Launch seg_node next to the CARLA ROS bridge.

    ros2 launch carla_seg_ros seg.launch.py                                 # /carla/ego_vehicle/rgb_front/image
    ros2 launch carla_seg_ros seg.launch.py role_name:=hero camera:=rgb_left backend:=onnxruntime
    ros2 launch carla_seg_ros seg.launch.py use_sim_time:=false params_file:=/path/my_seg.yaml

A best-effort image subscription (qos_reliability: best_effort in a params file) needs the large-frame Fast DDS
profile, or it loses most 800x600 frames (see docs/node.md):

    ros2 launch carla_seg_ros seg.launch.py params_file:=/path/best_effort.yaml \
        dds_profile:=$(ros2 pkg prefix carla_seg_ros)/share/carla_seg_ros/config/fastdds_large_frames.xml

Outputs: /<namespace>/seg_node/{mask,mask_color,overlay,confidence,class_fractions,label_info} and /diagnostics.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

PACKAGE = "carla_seg_ros"


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    role_name = LaunchConfiguration("role_name")
    camera = LaunchConfiguration("camera")
    params_file = LaunchConfiguration("params_file")
    backend = LaunchConfiguration("backend")
    namespace = LaunchConfiguration("namespace")
    use_sim_time = LaunchConfiguration("use_sim_time")
    dds_profile = LaunchConfiguration("dds_profile")

    args = [
        DeclareLaunchArgument("role_name", default_value="ego_vehicle", description="CARLA vehicle role name"),
        DeclareLaunchArgument("camera", default_value="rgb_front", description="CARLA camera sensor name"),
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "seg.yaml"),
                              description="seg_node parameters (ros__parameters YAML)"),
        DeclareLaunchArgument("backend", default_value="auto",
                              description="auto | tensorrt | onnxruntime | openvino | torch | torch_cuda"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of seg_node"),
        DeclareLaunchArgument("use_sim_time", default_value="true",
                              description="use the CARLA bridge's /clock (the bridge stamps images in sim time)"),
        DeclareLaunchArgument("dds_profile", default_value="",
                              description="Fast DDS XML profile for seg_node's process, e.g. "
                                          "config/fastdds_large_frames.xml (needed for qos_reliability:=best_effort)"),
    ]

    def seg_node(condition, env):
        return Node(
            package="carla_seg_ros",
            executable="seg_node",
            name="seg_node",
            namespace=namespace,
            output="screen",
            emulate_tty=True,
            parameters=[params_file, {
                "backend": backend,
                "use_sim_time": ParameterValue(use_sim_time, value_type=bool),
            }],
            remappings=[("image", ["/carla/", role_name, "/", camera, "/image"])],
            additional_env=env,
            condition=condition,
        )

    has_profile = PythonExpression(["'", dds_profile, "' != ''"])
    return LaunchDescription(args + [
        seg_node(IfCondition(has_profile), {"FASTDDS_DEFAULT_PROFILES_FILE": dds_profile}),
        seg_node(UnlessCondition(has_profile), {}),
    ])
