"""launch/seg.launch.py, config/seg.yaml and config/seg.rviz agree with the node and with setup.py.

`launch`/`launch_ros` are not installable from PyPI here, so the launch file is compiled and read with `ast`
instead of run: executable, params file, launch arguments, parameter names and the image remap are checked against
setup.py and the node's own parameter table (carla_seg_ros.ros.seg_node.PARAMETERS).
"""
from __future__ import annotations

import ast
import py_compile
import re
from pathlib import Path

import pytest
import yaml

from launch_ast import calls, keyword, parse

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch" / "seg.launch.py"
PARAMS = REPO / "config" / "seg.yaml"
RVIZ = REPO / "config" / "seg.rviz"


def _const(node) -> object:
    return node.value if isinstance(node, ast.Constant) else None


@pytest.fixture(scope="module")
def launch_args() -> dict:
    """DeclareLaunchArgument name -> default (a string, or the AST node when not a literal)."""
    out = {}
    for call in calls(parse(LAUNCH), "DeclareLaunchArgument"):
        default = keyword(call, "default_value")
        out[_const(call.args[0])] = _const(default) if isinstance(default, ast.Constant) else default
    return out


@pytest.fixture(scope="module")
def node_call() -> ast.Call:
    """The `node_args = dict(...)` both the plain Node and the LifecycleNode are built from."""
    calls = [n.value for n in ast.walk(parse(LAUNCH)) if isinstance(n, ast.Assign)
             and getattr(n.targets[0], "id", None) == "node_args" and isinstance(n.value, ast.Call)]
    assert len(calls) == 1, "expected one `node_args = dict(...)` shared by Node and LifecycleNode"
    return calls[0]


def test_launch_file_compiles(tmp_path):
    py_compile.compile(str(LAUNCH), cfile=str(tmp_path / "seg.launch.pyc"), doraise=True)
    names = {n.name for n in parse(LAUNCH).body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in names


def test_no_expression_is_pasted_together_from_strings():
    # A path with a quote once broke `PythonExpression(["'", dds_profile, "' != ''"])`; values are plain strings now.
    names = {n.id for n in ast.walk(parse(LAUNCH)) if isinstance(n, ast.Name)} | \
        {a.name for n in ast.walk(parse(LAUNCH)) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert not names & {"PythonExpression", "eval", "exec"}, names


def test_node_executable_is_installed_by_setup_py(node_call):
    source = LAUNCH.read_text()
    assert _const(keyword(node_call, "package")) == "PACKAGE" or 'PACKAGE = "carla_seg_ros"' in source
    assert 'NODE_NAME = "seg_node"' in source
    executable = _const(keyword(node_call, "executable"))
    scripts = [_const(e) for call in calls(parse(REPO / "setup.py"), "setup")
               for d in [keyword(call, "entry_points")] if isinstance(d, ast.Dict)
               for k, v in zip(d.keys, d.values) if _const(k) == "console_scripts" for e in v.elts]
    entry = [s for s in scripts if s.split("=")[0].strip() == executable]
    assert entry, f"setup.py installs no console script {executable!r} ({scripts})"
    module, func = entry[0].split("=")[1].strip().split(":")
    imported = __import__(module, fromlist=[func])
    assert callable(getattr(imported, func))
    # colcon puts console scripts where `ros2 run` looks: lib/<package>
    assert "install_scripts=$base/lib/carla_seg_ros" in (REPO / "setup.cfg").read_text()


def test_launch_arguments_and_defaults(launch_args):
    assert launch_args["role_name"] == "ego_vehicle"
    assert launch_args["camera"] == "rgb_front"
    # "" = not given: the params file's value is used (see test_launch_params.py for the precedence rule)
    assert launch_args["use_sim_time"] == ""
    assert launch_args["backend"] == ""
    assert launch_args["model"] == ""       # config/seg.yaml's model: auto (the ladder's timed choice)
    assert launch_args["namespace"] == ""
    assert launch_args["cameras"] == ""
    assert launch_args["managed"] == "false"
    assert launch_args["rviz"] == "false"
    # os.path.join(share, "config", "fastdds_large_frames.xml"): not a literal
    assert isinstance(launch_args["dds_profile"], ast.Call)
    assert "fastdds_large_frames.xml" in LAUNCH.read_text()
    assert "params_file" in launch_args
    from carla_seg_ros.runtime.backends import BACKEND_CHOICES
    desc = [_const(keyword(c, "description")) for c in calls(parse(LAUNCH), "DeclareLaunchArgument")
            if _const(c.args[0]) == "backend"][0]
    assert all(b in desc for b in BACKEND_CHOICES)


def test_params_file_exists_is_installed_and_matches_the_declared_parameters(launch_args):
    default = launch_args["params_file"]
    parts = [_const(a) for a in default.args] if isinstance(default, ast.Call) else []
    assert parts[-2:] == ["config", "seg.yaml"], ast.dump(default)
    assert PARAMS.is_file()
    assert "config/*.yaml" in (REPO / "setup.py").read_text()

    from carla_seg_ros.ros.seg_node import PARAMETERS
    data = yaml.safe_load(PARAMS.read_text())
    assert list(data) == ["/**"], "seg.yaml must apply under any namespace"
    params = data["/**"]["ros__parameters"]
    declared = {p.name: p.default for p in PARAMETERS}
    assert set(params) == set(declared), (f"only in seg.yaml: {set(params) - set(declared)}; "
                                          f"declared but missing: {set(declared) - set(params)}")
    for name, value in params.items():
        assert value == declared[name] and type(value) is type(declared[name]), \
            f"{name}: seg.yaml has {value!r}, the node's default is {declared[name]!r}"


def test_parameters_set_by_launch_arguments_are_declared():
    from carla_seg_ros.ros.launch_setup import LAUNCH_DEFAULTS, OVERRIDABLE
    from carla_seg_ros.ros.seg_node import PARAMETERS_BY_NAME
    assert set(OVERRIDABLE) | set(LAUNCH_DEFAULTS) <= set(PARAMETERS_BY_NAME) | {"use_sim_time"}
    for name in OVERRIDABLE:
        assert f'"{name}": arg("{name}")' in LAUNCH.read_text(), f"launch argument {name} is not passed through"


def _subscribed_topics() -> set[str]:
    """Topic literals of every create_subscription(...) in seg_node's modules (the default camera's topic)."""
    topics = set()
    for module in ("seg_node.py", "seg_camera.py", "local_map_outputs.py"):
        tree = parse(REPO / "carla_seg_ros" / "ros" / module)
        topics |= {_const(c.args[1]) for c in calls(tree, "create_subscription")}
    source = (REPO / "carla_seg_ros" / "ros" / "seg_node.py").read_text()
    topics |= set(re.findall(r'\[\("", "(\w+)"\)\]', source))    # streams = ... or [("", "image")]
    from carla_seg_ros.ros.occupancy import camera_info_topic
    return topics | {camera_info_topic(t) for t in topics if t}      # each camera's CameraInfo beside its image


def test_remap_targets_the_carla_camera_topics_the_node_subscribes(node_call):
    remaps = keyword(node_call, "remappings").elts
    assert [_const(r.elts[0]) for r in remaps] == ["image", "camera_info", "odometry"]
    assert {"image", "camera_info", "odometry"} <= _subscribed_topics()
    source = LAUNCH.read_text()
    assert """single_topic = f"/carla/{arg('role_name')}/{arg('camera')}/image\"""" in source
    assert '("camera_info", single_topic[:-len("image")] + "camera_info")' in source
    assert '("odometry", f"/carla/{arg(\'role_name\')}/odometry")' in source
    assert '("depth", f"/carla/{arg(\'role_name\')}/{arg(\'depth_camera\')}/image")' in source


def test_rviz_config_shows_camera_overlay_colour_mask_and_occupancy():
    config = yaml.safe_load(RVIZ.read_text())
    manager = config["Visualization Manager"]
    topics = {d["Name"]: d["Topic"]["Value"] for d in manager["Displays"]}
    assert topics == {"Camera": "/carla/ego_vehicle/rgb_front/image", "Segmentation overlay": "/seg_node/overlay",
                      "Colour mask": "/seg_node/mask_color", "Occupancy": "/seg_node/occupancy"}
    occupancy = [d for d in manager["Displays"] if d["Name"] == "Occupancy"][0]
    assert occupancy["Class"] == "rviz_default_plugins/Map"
    # rviz2 reads "Update Topic" after the topic, so a stale value would override its own <topic>_updates default.
    assert "Update Topic" not in occupancy
    # Missing, rviz2 passes an uninitialised bool to hideLeftDock / hideRightDock.
    assert config["Window Geometry"]["Hide Left Dock"] is False
    assert config["Window Geometry"]["Hide Right Dock"] is False
    # The grids are in the vehicle frame (the camera frame's parent), so that frame needs no TF to show them.
    assert manager["Global Options"]["Fixed Frame"] == "ego_vehicle"
    assert 'f"{prefix}occupancy"' in (REPO / "carla_seg_ros" / "ros" / "occupancy.py").read_text()
    published = set(re.findall(r'create_publisher\(\w+, prefix \+ "(\w+)"',
                               (REPO / "carla_seg_ros" / "ros" / "seg_camera.py").read_text()))
    assert {"overlay", "mask_color", "mask", "confidence", "class_fractions", "label_info"} <= published
    assert "config/*.rviz" in (REPO / "setup.py").read_text()


def test_dds_profile_is_valid_xml_and_installed():
    import xml.etree.ElementTree as ET
    root = ET.parse(REPO / "config" / "fastdds_large_frames.xml").getroot()
    ns = {"d": "http://www.eprosima.com"}
    builtin = root.find(".//d:participant/d:rtps/d:builtinTransports", ns)
    # DEFAULT (SHM + UDPv4) keeps discovery and locators of Fast DDS defaults: a default-configured bridge matches
    assert builtin is not None and builtin.text == "DEFAULT" and int(builtin.get("sockets_size")) >= 4 * 2 ** 20
    assert "config/*.xml" in (REPO / "setup.py").read_text()


def test_managed_argument_starts_the_same_executable_as_a_lifecycle_node():
    from carla_seg_ros.ros.seg_node import MANAGED_FLAG
    lifecycle = calls(parse(LAUNCH), "LifecycleNode")
    assert len(lifecycle) == 1
    assert [_const(e) for e in keyword(lifecycle[0], "arguments").elts] == [MANAGED_FLAG]
    assert any(kw.arg is None and getattr(kw.value, "id", None) == "node_args" for kw in lifecycle[0].keywords), \
        "LifecycleNode must share node_args with the plain Node"
    plain = [c for c in calls(parse(LAUNCH), "Node") if getattr(c.func, "id", None) == "Node"
             and any(kw.arg is None for kw in c.keywords)]
    assert len(plain) == 1


def test_node_setup_runs_in_an_opaque_function_with_the_launch_setup_helpers():
    tree = parse(LAUNCH)
    assert calls(tree, "OpaqueFunction")
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                and n.module == "carla_seg_ros.ros.launch_setup" for a in n.names}
    assert {"resolve_parameters", "camera_topics", "write_params_file", "write_rviz_config", "require_rviz"} <= imported
