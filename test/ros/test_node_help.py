"""`seg_node --help` and `seg_eval_node --help` print their usage and exit 0 without starting ROS."""
from __future__ import annotations

import subprocess
import sys

import pytest

from carla_seg_ros.ros.seg_eval_node import PARAMETERS as EVAL_PARAMETERS
from carla_seg_ros.ros.seg_params import PARAMETERS as SEG_PARAMETERS


@pytest.mark.parametrize("module, parameters, topic", [
    ("carla_seg_ros.ros.seg_node", SEG_PARAMETERS, "~/mask"),
    ("carla_seg_ros.ros.seg_eval_node", EVAL_PARAMETERS, "~/metrics"),
])
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_usage_and_exits_without_starting_ros(module, parameters, topic, flag):
    # A node that started would spin until killed: the timeout turns that into a failure, not a hang.
    done = subprocess.run([sys.executable, "-m", module, flag], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("usage: ")
    assert topic in out
    assert "ros2 launch carla_seg_ros" in out
    missing = [p.name for p in parameters if f"  {p.name} (default " not in out]
    assert not missing, f"parameters missing from --help: {missing}"
    assert "ready" not in out + done.stderr      # the node's startup line


def test_help_inside_ros_args_is_not_the_nodes_flag():
    from carla_seg_ros.ros.node_help import wants_help
    assert wants_help(["seg_node", "--help"])
    assert not wants_help(["seg_node", "--ros-args", "-p", "model:=auto"])
