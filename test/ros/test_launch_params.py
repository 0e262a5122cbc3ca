"""Parameter precedence and namespaces, through the functions launch/seg.launch.py uses, and on a real node.

`launch`/`launch_ros` are not installable here, so the launch file's OpaqueFunction is run against minimal
stand-ins of their classes that only record the actions it returns (what a real launch would start); everything the
launch file computes (precedence, params file, remaps, environment, rviz config) is the real code in
carla_seg_ros.ros.launch_setup; other packages (rviz2) are looked up in a real ament index the tests lay out. A real
seg_node then gets the generated and the shipped params file under a namespace, over DDS, and its parameters are
read back through its parameter services, as are every declared parameter of seg_node and seg_eval_node.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import pytest
import yaml

from carla_seg_ros.ros import launch_setup
from carla_seg_ros.ros.launch_setup import file_parameters, resolve_parameters

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch" / "seg.launch.py"
SEG_YAML = REPO / "config" / "seg.yaml"
DOMAIN_ID = 42


# ------------------------------------------------------------------ the launch file, run with recording stand-ins
class _Recorded:
    made: list = []        # every action constructed, in order (reset for each launch)

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs
        _Recorded.made.append(self)


class _LaunchConfiguration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        return context[self.name]


def _stub_modules(monkeypatch):
    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, m)
        return m

    kinds = {k: type(k, (_Recorded,), {}) for k in ("LaunchDescription", "DeclareLaunchArgument", "OpaqueFunction",
                                                     "Node", "LifecycleNode")}
    module("launch", LaunchDescription=kinds["LaunchDescription"])
    module("launch.actions", DeclareLaunchArgument=kinds["DeclareLaunchArgument"],
           OpaqueFunction=kinds["OpaqueFunction"])
    module("launch.substitutions", LaunchConfiguration=_LaunchConfiguration)
    module("launch_ros")
    module("launch_ros.actions", Node=kinds["Node"], LifecycleNode=kinds["LifecycleNode"])
    # The package's share folder is the source tree; every other package is looked up in the real ament index
    # (AMENT_PREFIX_PATH), as launch_ros does, so the `rviz2` fixture installs rviz2 by making an index entry.
    from ament_index_python.packages import get_package_prefix
    module("ament_index_python")
    module("ament_index_python.packages", get_package_share_directory=lambda package: str(REPO),
           get_package_prefix=get_package_prefix)
    monkeypatch.setattr(_Recorded, "made", [])


def run_launch(monkeypatch, **given) -> list:
    """The actions seg.launch.py returns for `ros2 launch ... k:=v` (defaults from its DeclareLaunchArgument)."""
    _stub_modules(monkeypatch)
    spec = importlib.util.spec_from_file_location("seg_launch_under_test", LAUNCH)
    launch_file = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launch_file)
    description = launch_file.generate_launch_description()
    entities = description.args[0]
    context = {e.args[0]: e.kwargs["default_value"] for e in entities if type(e).__name__ == "DeclareLaunchArgument"}
    unknown = set(given) - set(context)
    assert not unknown, f"not launch arguments: {unknown}"
    context.update(given)
    opaque = [e for e in entities if type(e).__name__ == "OpaqueFunction"]
    assert len(opaque) == 1
    return opaque[0].kwargs["function"](context)


@pytest.fixture(autouse=True)
def launch_cache(monkeypatch, tmp_path) -> Path:
    """The per-user folder the launch files write to, here the test's own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg_cache"))
    return tmp_path / "xdg_cache" / "carla_seg_ros" / "launch"


def ament_prefix(root: Path, *packages: str) -> Path:
    """An install prefix whose ament index lists ``packages`` (what `colcon build` / apt install leave)."""
    index = root / "share" / "ament_index" / "resource_index" / "packages"
    index.mkdir(parents=True)
    for package in packages:
        (index / package).touch()
    return root


@pytest.fixture
def rviz2(monkeypatch, tmp_path):
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(ament_prefix(tmp_path / "ros", "rviz2", "rclpy")))


@pytest.fixture
def no_rviz2(monkeypatch, tmp_path):
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(ament_prefix(tmp_path / "ros", "rclpy")))


def node_params(action) -> dict:
    (path,) = action.kwargs["parameters"]
    data = yaml.safe_load(Path(path).read_text())
    assert list(data) == ["/**"]
    return data["/**"]["ros__parameters"]


def write_yaml(path: Path, key: str, params: dict) -> Path:
    path.write_text(yaml.safe_dump({key: {"ros__parameters": params}}))
    return path


def test_depth_camera_remaps_the_single_cameras_depth(monkeypatch):
    (node,) = run_launch(monkeypatch, role_name="hero", depth_camera="depth_front")
    assert ("depth", "/carla/hero/depth_front/image") in node.kwargs["remappings"]
    assert ("odometry", "/carla/hero/odometry") in node.kwargs["remappings"]


def test_defaults_are_seg_yaml_plus_sim_time(monkeypatch):
    (node,) = run_launch(monkeypatch)
    assert type(node).__name__ == "Node"
    params = node_params(node)
    shipped = yaml.safe_load(SEG_YAML.read_text())["/**"]["ros__parameters"]
    assert params == {"use_sim_time": True, **shipped}
    assert node.kwargs["remappings"] == [("image", "/carla/ego_vehicle/rgb_front/image"),
                                         ("camera_info", "/carla/ego_vehicle/rgb_front/camera_info"),
                                         ("odometry", "/carla/ego_vehicle/odometry")]
    assert node.kwargs["name"] == "seg_node" and node.kwargs["namespace"] == ""
    # the large-frame Fast DDS profile (compatible with default-configured peers) by default
    assert node.kwargs["additional_env"] == {"FASTDDS_DEFAULT_PROFILES_FILE": str(REPO / "config" /
                                                                               "fastdds_large_frames.xml")}
    (plain,) = run_launch(monkeypatch, dds_profile="")
    assert not plain.kwargs["additional_env"]


def test_params_file_wins_over_launch_defaults(monkeypatch, tmp_path):
    custom = write_yaml(tmp_path / "my.yaml", "seg_node", {"backend": "onnxruntime", "use_sim_time": False})
    params = node_params(run_launch(monkeypatch, params_file=str(custom))[0])
    assert params["backend"] == "onnxruntime" and params["use_sim_time"] is False


def test_explicit_launch_arguments_win_over_the_params_file(monkeypatch, tmp_path):
    custom = write_yaml(tmp_path / "my.yaml", "seg_node", {"backend": "onnxruntime", "use_sim_time": False})
    params = node_params(run_launch(monkeypatch, params_file=str(custom), backend="openvino", use_sim_time="true")[0])
    assert params["backend"] == "openvino" and params["use_sim_time"] is True


def test_the_shipped_params_file_runs_the_model_ladder_and_model_overrides_it(monkeypatch, tmp_path):
    assert node_params(run_launch(monkeypatch)[0])["model"] == "auto"      # config/seg.yaml
    assert node_params(run_launch(monkeypatch, model="fast")[0])["model"] == "fast"
    custom = write_yaml(tmp_path / "my.yaml", "seg_node", {"model": "accurate"})
    assert node_params(run_launch(monkeypatch, params_file=str(custom))[0])["model"] == "accurate"


def test_a_file_that_sets_nothing_leaves_the_node_defaults(tmp_path):
    empty = write_yaml(tmp_path / "empty.yaml", "/**", {"overlay_alpha": 0.3})
    assert resolve_parameters(empty, {}) == {"use_sim_time": True, "overlay_alpha": 0.3}   # no backend: node's auto


def test_relative_section_applies_under_a_namespace(monkeypatch, tmp_path):
    custom = write_yaml(tmp_path / "my.yaml", "seg_node", {"overlay_alpha": 0.2})
    (node,) = run_launch(monkeypatch, params_file=str(custom), namespace="perception")
    assert node.kwargs["namespace"] == "perception" and node_params(node)["overlay_alpha"] == 0.2


@pytest.mark.parametrize("key, namespace, applies", [
    ("/**", "", True), ("/**", "/perception", True), ("seg_node", "", True), ("seg_node", "/perception", True),
    ("/seg_node", "/perception", False), ("/perception/seg_node", "/perception", True),
    ("/perception/seg_node", "", False), ("/**/seg_node", "/a/b", True), ("/**/seg_node", "", True),
    ("/*/seg_node", "/perception", True), ("other_node", "", False), ("/perception/*", "/perception", True),
])
def test_section_matching(tmp_path, key, namespace, applies):
    path = write_yaml(tmp_path / "p.yaml", key, {"qos_depth": 7})
    assert (file_parameters(path, namespace) == {"qos_depth": 7}) is applies


def test_bad_inputs_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        file_parameters(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match="not a boolean"):
        resolve_parameters(SEG_YAML, {"use_sim_time": "maybe"})


def test_dds_profile_with_a_quote_reaches_the_environment_unchanged(monkeypatch, tmp_path):
    profile = str(tmp_path / "it's a profile.xml")
    (node,) = run_launch(monkeypatch, dds_profile=profile)
    assert node.kwargs["additional_env"] == {"FASTDDS_DEFAULT_PROFILES_FILE": profile}


def test_managed_starts_a_lifecycle_node_of_the_same_executable(monkeypatch):
    (node,) = run_launch(monkeypatch, managed="true")
    assert type(node).__name__ == "LifecycleNode"
    assert node.kwargs["executable"] == "seg_node" and node.kwargs["arguments"] == ["--managed"]


def test_cameras_map_to_carla_topics(monkeypatch):
    (node,) = run_launch(monkeypatch, cameras="rgb_front,rgb_left", role_name="hero")
    assert node_params(node)["cameras"] == ["/carla/hero/rgb_front/image", "/carla/hero/rgb_left/image"]
    assert launch_setup.camera_topics("[a, /x/b/image]", "r") == [("a", "/carla/r/a/image"), ("b", "/x/b/image")]


@pytest.mark.parametrize("given, topics", [
    ({"role_name": "hero", "camera": "rgb_left", "namespace": "perception"},
     ["/carla/hero/rgb_left/image", "/perception/seg_node/overlay", "/perception/seg_node/mask_color",
      "/perception/seg_node/occupancy"]),
    ({"cameras": "front,left"},
     ["/carla/ego_vehicle/front/image", "/seg_node/front/overlay", "/seg_node/front/mask_color",
      "/seg_node/front/occupancy", "/carla/ego_vehicle/left/image", "/seg_node/left/overlay",
      "/seg_node/left/mask_color", "/seg_node/left/occupancy"]),
])
def test_rviz_gets_a_config_for_role_camera_and_namespace(monkeypatch, rviz2, given, topics):
    node, rviz = run_launch(monkeypatch, rviz="true", **given)
    assert rviz.kwargs["executable"] == "rviz2" and rviz.kwargs["arguments"][0] == "-d"
    config = yaml.safe_load(Path(rviz.kwargs["arguments"][1]).read_text())
    displays = config["Visualization Manager"]["Displays"]
    assert [d["Topic"]["Value"] for d in displays] == topics
    assert not [d["Name"] for d in displays if "Update Topic" in d], "a stale Update Topic overrides rviz2's default"
    assert config["Window Geometry"]["Hide Left Dock"] is False and config["Window Geometry"]["Hide Right Dock"] is False
    # Its parameters go through the package's writer: a dict would leave a /tmp/launch_params_* file behind.
    (params_path,) = rviz.kwargs["parameters"]
    assert isinstance(params_path, str) and launch_setup.launch_cache_dir() in Path(params_path).parents
    assert yaml.safe_load(Path(params_path).read_text())["/**"]["ros__parameters"] == {"use_sim_time": True}
    assert set(config["Window Geometry"]) >= {d["Name"] for d in displays}
    # The occupancy grids are in the vehicle frame: the role's frame, which the bridge publishes.
    assert config["Visualization Manager"]["Global Options"]["Fixed Frame"] == given.get("role_name", "ego_vehicle")


@pytest.mark.parametrize("distro, package", [("jazzy", "ros-jazzy-rviz2"), ("", "ros-<distro>-rviz2")])
def test_missing_rviz2_message_names_the_real_distro(monkeypatch, distro, package):
    monkeypatch.setenv("ROS_DISTRO", distro)
    message = launch_setup.rviz_missing_message()
    assert f"sudo apt install {package}" in message or (not distro and package in message)
    assert "$ROS_DISTRO" not in message and "\n" not in message


@pytest.mark.parametrize("given", [{}, {"managed": "true"}, {"cameras": "front,left"}])
def test_rviz_without_rviz2_stops_before_starting_anything(monkeypatch, no_rviz2, launch_cache, given):
    """launch_ros looked rviz2 up only when starting it, after seg_node: the launch failed, seg_node lived on."""
    with pytest.raises(RuntimeError) as failure:
        run_launch(monkeypatch, rviz="true", **given)
    assert str(failure.value) == launch_setup.rviz_missing_message()
    assert "\n" not in str(failure.value) and "$ROS_DISTRO" not in str(failure.value)
    assert "rviz:=false" in str(failure.value)
    started = [type(a).__name__ for a in _Recorded.made if type(a).__name__ in ("Node", "LifecycleNode")]
    assert started == [], "a failed launch must not have made any process action"
    assert not launch_cache.exists(), "nor written any file"
    (node,) = run_launch(monkeypatch, rviz="false", **given)        # the way out the message names
    assert node.kwargs["executable"] == "seg_node"


def test_rviz2_lookup_is_the_ament_index(monkeypatch, tmp_path):
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(ament_prefix(tmp_path / "a", "rclpy")))
    with pytest.raises(RuntimeError, match="rviz:=false"):
        launch_setup.require_rviz()
    with_rviz2 = ament_prefix(tmp_path / "b", "rviz2")
    monkeypatch.setenv("AMENT_PREFIX_PATH", os.pathsep.join([str(tmp_path / "a"), str(with_rviz2)]))
    launch_setup.require_rviz()
    asked = []
    launch_setup.require_rviz(lambda package: asked.append(package) or "/opt/ros/x")
    assert asked == ["rviz2"]


def test_repeated_launches_leave_nothing_behind(monkeypatch, rviz2, launch_cache, tmp_path):
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.setenv("TMPDIR", str(temp))

    def files(actions) -> list[Path]:
        node, rviz = actions
        return [Path(node.kwargs["parameters"][0]), Path(rviz.kwargs["arguments"][1]),
                Path(rviz.kwargs["parameters"][0])]

    runs = [files(run_launch(monkeypatch, rviz="true")) for _ in range(5)]
    assert not list(temp.iterdir())
    assert all(run == runs[0] for run in runs)
    assert sorted(launch_cache.iterdir()) == sorted(runs[0]), \
        "seg_node's params, the RViz config and rviz2's params: one file each, reused"
    first = {path: path.read_text() for path in runs[0]}
    # Other arguments (another launch, maybe at the same time) get their own files; the first ones stay as they were.
    other = files(run_launch(monkeypatch, rviz="true", role_name="hero", backend="openvino"))
    assert not set(other[:2]) & set(first) and other[2] == runs[0][2]      # rviz2's params: the same text
    assert {path: path.read_text() for path in runs[0]} == first
    assert node_params(run_launch(monkeypatch, rviz="false", role_name="hero", backend="openvino")[0])["backend"] \
        == "openvino"
    assert len(list(launch_cache.iterdir())) == 5 and not list(temp.iterdir())

    # carla_live.launch.py's seg_node params go to the same place: by default the very file seg.launch.py wrote
    from carla_seg_ros.ros.live_launch import ARGUMENTS, node_settings
    values = {name: default for name, default, _ in ARGUMENTS}
    values.update(params_file=str(SEG_YAML), dds_profile="")
    for _ in range(3):
        path = launch_setup.write_params_file(node_settings(values)["seg_node"])
        evaluator = launch_setup.write_params_file(node_settings(values)["seg_eval_node"], node_name="seg_eval_node")
    assert path == runs[0][0] and evaluator.name.startswith("seg_eval_node_params-")
    assert len(list(launch_cache.iterdir())) == 6 and not list(temp.iterdir())


def test_concurrent_launches_do_not_clobber_each_other(launch_cache):
    from concurrent.futures import ThreadPoolExecutor
    variants = [{"backend": "onnxruntime"}, {"backend": "openvino"}, {"backend": "onnxruntime"}] * 8
    with ThreadPoolExecutor(6) as pool:
        paths = list(pool.map(launch_setup.write_params_file, variants))
    for params, path in zip(variants, paths):
        assert node_params(types.SimpleNamespace(kwargs={"parameters": [path]})) == params
    assert len(set(paths)) == 2 and sorted(launch_cache.iterdir()) == sorted(set(paths)), "no scratch files left"


# ------------------------------------------------------------------ a real node under a namespace
def _ask(node_name: str, requests: list, proc, timeout: float = 90.0) -> list:
    """Call ``node_name``'s services in turn, each (service type, service name, request), from a client node over
    DDS; their responses. Fails when the node exits or a service does not come up within ``timeout``."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    node = rclpy.create_node("launch_params_probe", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        responses = []
        for srv_type, service, request in requests:
            client = node.create_client(srv_type, f"{node_name}/{service}")
            deadline = time.monotonic() + timeout
            while not client.wait_for_service(timeout_sec=0.5):
                assert proc.poll() is None, f"{node_name} exited with {proc.returncode}"
                assert time.monotonic() < deadline, f"no {node_name}/{service} service"
            future = client.call_async(request)
            executor.spin_until_future_complete(future, timeout_sec=20.0)
            assert future.done(), f"{node_name}/{service} did not answer"
            responses.append(future.result())
        return responses
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def _get_parameters(node_name: str, names: list[str], proc, timeout: float = 90.0) -> dict:
    from rcl_interfaces.srv import GetParameters
    from rclpy.parameter import parameter_value_to_python

    (response,) = _ask(node_name, [(GetParameters, "get_parameters", GetParameters.Request(names=names))], proc,
                       timeout)
    return dict(zip(names, (parameter_value_to_python(v) for v in response.values)))


@pytest.mark.parametrize("style", ["shipped_seg_yaml", "launch_generated"])
def test_real_node_under_a_namespace_takes_the_params_file(tmp_path, style):
    pytest.importorskip("rclpy", reason="ROS 2 wheels (extra `ros`) are not installed")
    if style == "shipped_seg_yaml":   # seg.yaml as shipped, one value edited the way its comments invite
        text = SEG_YAML.read_text().replace("overlay_alpha: 0.5 ", "overlay_alpha: 0.25")
        assert "overlay_alpha: 0.25" in text
        params_file = tmp_path / "seg.yaml"
        params_file.write_text(text)
    else:                             # a user file in the old `seg_node:` style, through the launch helper
        user = write_yaml(tmp_path / "user.yaml", "seg_node", {"overlay_alpha": 0.25, "backend": "onnxruntime"})
        params_file = launch_setup.write_params_file(resolve_parameters(user, {}, namespace="/perception"), tmp_path)
    cmd = [sys.executable, "-m", "carla_seg_ros.ros.seg_node", "--ros-args", "-r", "__ns:=/perception",
           "--params-file", str(params_file)]
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN_ID), PYTHONUNBUFFERED="1")
    log = tmp_path / "node.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        values = _get_parameters("/perception/seg_node", ["overlay_alpha", "qos_depth", "use_sim_time"], proc)
    finally:
        proc.send_signal(2)
        proc.wait(timeout=20)
    assert values["overlay_alpha"] == 0.25, log.read_text()
    assert values["qos_depth"] == 10
    assert values["use_sim_time"] is (style == "launch_generated"), values
    assert proc.returncode == 0, log.read_text()


@pytest.mark.parametrize("module", ["seg_node", "seg_eval_node"])
def test_every_declared_parameter_is_readable_through_the_parameter_services(tmp_path, module):
    """`ros2 param get` asks get_parameters; one unset parameter (cameras at its default []) made it answer nothing,
    for that name and for any request naming it."""
    pytest.importorskip("rclpy", reason="ROS 2 wheels (extra `ros`) are not installed")
    from rcl_interfaces.msg import ParameterType
    from rcl_interfaces.srv import DescribeParameters, GetParameters, ListParameters
    from rclpy.parameter import parameter_value_to_python

    table = importlib.import_module(f"carla_seg_ros.ros.{module}").PARAMETERS
    namespace = "/param_services"
    cmd = [sys.executable, "-m", f"carla_seg_ros.ros.{module}", "--ros-args", "-r", f"__ns:={namespace}"]
    if module == "seg_eval_node":      # its report, written on shutdown, goes to the test's folder
        cmd += ["-p", f"output_dir:={tmp_path}"]
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN_ID), PYTHONUNBUFFERED="1")
    log = tmp_path / "node.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    full = f"{namespace}/{module}"
    try:
        (listed,) = _ask(full, [(ListParameters, "list_parameters", ListParameters.Request())], proc)
        names = list(listed.result.names)
        assert {p.name for p in table} <= set(names), log.read_text()
        singles = [GetParameters.Request(names=[name]) for name in names]
        got_all, described, *got_each = _ask(
            full, [(GetParameters, "get_parameters", GetParameters.Request(names=names)),
                   (DescribeParameters, "describe_parameters", DescribeParameters.Request(names=names))] +
            [(GetParameters, "get_parameters", r) for r in singles], proc)
    finally:
        proc.send_signal(2)
        proc.wait(timeout=30)
    assert len(got_all.values) == len(names), f"get_parameters of all {len(names)} answered {len(got_all.values)}"
    for name, value, each in zip(names, got_all.values, got_each):
        assert value.type != ParameterType.PARAMETER_NOT_SET, name
        assert len(each.values) == 1 and each.values[0] == value, name
    values = dict(zip(names, (parameter_value_to_python(v) for v in got_all.values)))
    descriptors = dict(zip(names, described.descriptors))
    for spec in table:
        if module == "seg_eval_node" and spec.name == "output_dir":
            continue
        assert values[spec.name] == spec.default and type(values[spec.name]) is type(spec.default), spec.name
        expected = spec.descriptor()
        got = descriptors[spec.name]
        assert (got.type, got.read_only, got.description) == (expected.type, expected.read_only,
                                                                expected.description), spec.name
    if module == "seg_node":     # [] as a typed, read-only string array
        cameras = descriptors["cameras"]
        assert cameras.type == ParameterType.PARAMETER_STRING_ARRAY and cameras.read_only and values["cameras"] == []
    assert proc.returncode == 0, log.read_text()
