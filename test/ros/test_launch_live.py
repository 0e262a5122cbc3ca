"""launch/carla_live.launch.py and config/carla_objects.json, checked without `launch` (no PyPI wheels for it).

The launch file is compiled and read with ast, as test_launch.py does for seg.launch.py. What it computes lives in
carla_seg_ros.ros.live_launch (plain Python: launch-argument strings -> node parameters, remaps, client arguments),
which the launch file imports and these tests call, against the nodes' parameter tables and seg.launch.py's
precedence rule.
"""
from __future__ import annotations

import ast
import json
import py_compile
from pathlib import Path

import pytest

from launch_ast import calls, keyword, parse

REPO = Path(__file__).resolve().parents[2]
LIVE = REPO / "launch" / "carla_live.launch.py"
SEG = REPO / "launch" / "seg.launch.py"
OBJECTS = REPO / "config" / "carla_objects.json"


@pytest.fixture(scope="module")
def live():
    from carla_seg_ros.ros import live_launch
    return live_launch


def defaults(live) -> dict:
    values = {name: default for name, default, _ in live.ARGUMENTS}
    values["params_file"] = str(REPO / "config" / "seg.yaml")      # what the launch file puts there
    return values


def test_compiles_and_uses_no_pasted_python_expressions(tmp_path):
    py_compile.compile(str(LIVE), cfile=str(tmp_path / "live.pyc"), doraise=True)
    tree = parse(LIVE)
    assert "generate_launch_description" in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert not calls(tree, "PythonExpression")
    assert calls(tree, "OpaqueFunction")
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module ==
                "carla_seg_ros.ros.live_launch" for a in n.names}
    assert imported == {"ARGUMENTS", "node_settings"}


def test_shares_seg_launch_arguments_and_defaults(live):
    ours = {name: default for name, default, _ in live.ARGUMENTS}
    theirs = {}
    for call in calls(parse(SEG), "DeclareLaunchArgument"):
        default = keyword(call, "default_value")
        theirs[call.args[0].value] = default.value if isinstance(default, ast.Constant) else None
    # One camera, one evaluator: seg.launch.py's multi-camera, managed and rviz arguments are not offered here.
    for name in ("role_name", "camera", "params_file", "backend", "model", "namespace", "use_sim_time",
                 "dds_profile"):
        assert name in ours and name in theirs, name
        if theirs[name] is not None:
            assert ours[name] == theirs[name], name


def test_nodes_are_installed_console_scripts():
    setup = (REPO / "setup.py").read_text()
    executables = {keyword(c, "executable").value for c in calls(parse(LIVE), "Node")}
    assert executables == {"seg_node", "seg_eval_node"}
    for exe in executables | {"carla-seg"}:
        assert f'"{exe} = carla_seg_ros.' in setup
    assert "install_scripts=$base/lib/carla_seg_ros" in (REPO / "setup.cfg").read_text()


def test_default_settings_wire_the_nodes_together(live):
    from carla_seg_ros.ros.seg_eval_node import PARAMETERS as EVAL
    from carla_seg_ros.ros.seg_params import PARAMETERS_BY_NAME as SEG_PARAMS
    s = live.node_settings(defaults(live))
    assert s["seg_topic"] == "/carla/ego_vehicle/rgb_front/image"
    assert s["odometry_topic"] == "/carla/ego_vehicle/odometry"
    assert set(s["seg_node"]) <= set(SEG_PARAMS) | {"use_sim_time"} and s["seg_node"]["use_sim_time"] is True
    ev = s["seg_eval_node"]
    declared = {p.name: p for p in EVAL}
    assert set(ev) <= set(declared) | {"use_sim_time"}
    for name, value in ev.items():
        if name in declared:
            assert type(value) is type(declared[name].default), name
            if declared[name].choices:
                assert value in declared[name].choices, name
    assert ev["mask_topic"] == "/seg_node/mask"
    assert ev["gt_topic"] == "/carla/ego_vehicle/semantic_segmentation_front/image"
    assert (ev["gt_format"], ev["coding"], ev["use_sim_time"]) == ("palette", "auto", True)
    assert s["client_args"] is None and s["env"] is None


def test_namespace_native_client_profile_and_precedence(live, tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("/**:\n  ros__parameters:\n    use_sim_time: false\n    backend: openvino\n"
                      "    model_path: /m/int8.onnx\n")
    values = dict(defaults(live), namespace="/robot", role_name="hero", start_client="true", gt_source="native",
                  town="Town10HD_Opt", dds_profile="/x.xml", params_file=str(params), backend="onnxruntime")
    s = live.node_settings(values)
    ev = s["seg_eval_node"]
    assert ev["mask_topic"] == "/robot/seg_node/mask"
    assert ev["gt_topic"] == "/carla/hero/semantic_segmentation_front/image"
    assert (ev["gt_format"], ev["coding"]) == ("ids", "tags29")
    # The params file's use_sim_time wins over the launch default, the explicit backend over the file; the
    # evaluator follows seg_node's clock and model.
    assert s["seg_node"]["use_sim_time"] is False and ev["use_sim_time"] is False
    assert s["seg_node"]["backend"] == "onnxruntime" and ev["model_path"] == "/m/int8.onnx"
    assert s["env"] == {"FASTDDS_DEFAULT_PROFILES_FILE": "/x.xml"}
    from carla_seg_ros.simulator.carla_client import build_parser
    args = build_parser().parse_args(s["client_args"][1:])     # the client accepts exactly what launch passes
    assert s["client_args"][0] == "carla"
    assert (args.role, args.ros, args.town, args.port) == ("hero", "native", "Town10HD_Opt", 2000)
    with pytest.raises(ValueError, match="gt_source"):
        live.node_settings(dict(values, gt_source="lidar"))
    with pytest.raises(ValueError, match="start_client"):
        live.node_settings(dict(values, start_client="maybe"))


def test_sensor_file_cameras_match_pixel_for_pixel():
    """The bridge's carla_spawn_objects file: RGB and semantic camera share pose, size and FOV."""
    from carla_seg_ros.simulator import carla_sensors as cs
    objects = json.loads(OBJECTS.read_text())["objects"]
    (ego,) = [o for o in objects if o["type"].startswith("vehicle.")]
    assert ego["id"] == "ego_vehicle"
    cams = {o["id"]: o for o in ego["objects"] if o["type"].startswith("sensor.camera.")}
    rgb, sem = cams[cs.RGB], cams[cs.SEMANTIC]
    assert (rgb["type"], sem["type"]) == (cs.BLUEPRINTS[cs.RGB], cs.BLUEPRINTS[cs.SEMANTIC])
    keys = ("spawn_point", "image_size_x", "image_size_y", "fov", "sensor_tick")
    assert {k: rgb[k] for k in keys} == {k: sem[k] for k in keys}
    assert (rgb["image_size_x"], rgb["image_size_y"], rgb["fov"]) == (cs.WIDTH, cs.HEIGHT, cs.FOV)
    assert rgb["spawn_point"] == cs.MOUNT                    # the same mount `carla-seg carla` uses
    assert "config/*.json" in (REPO / "setup.py").read_text()


@pytest.mark.parametrize("launch_file", [LIVE, SEG])
def test_every_node_gets_its_parameters_from_the_package_writer(launch_file):
    # launch_ros writes a parameter dict to a /tmp/launch_params_* file it never deletes; the package's writer
    # (launch_setup.write_params_file) reuses one file per content in the user's cache instead.
    nodes = [c for c in ast.walk(parse(launch_file)) if isinstance(c, ast.Call)
             and getattr(c.func, "id", "") in ("Node", "LifecycleNode")]
    for call in nodes:
        params = keyword(call, "parameters")
        if params is None:      # node_args: checked where the dict is built
            continue
        assert isinstance(params, ast.List) and params.elts, f"{launch_file.name}: parameters is not a list"
        for element in params.elts:
            assert not isinstance(element, ast.Dict), f"{launch_file.name}: a Node gets a parameter dict"
            assert any(isinstance(n, ast.Call) and getattr(n.func, "id", "") == "write_params_file"
                       for n in ast.walk(element)), f"{launch_file.name}: parameters not written by write_params_file"
