"""carla_seg_ros: real-time U-Net semantic segmentation for CARLA camera topics in ROS 2."""

__version__ = "0.1.0"
