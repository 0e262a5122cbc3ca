"""seg_node's parameter table, its declaration with validation, and the ``cameras`` list -> (name, topic) rule.

Kept apart from the node so the launch helper, config/seg.yaml's test and the docs read one table.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType

from carla_seg_ros import image_codec
from carla_seg_ros.ros.local_map_outputs import PARAMETER_SPECS as LOCAL_MAP_PARAMETERS
from carla_seg_ros.ros.occupancy import PARAMETER_SPECS as OCCUPANCY_PARAMETERS
from carla_seg_ros.runtime.backends import BACKEND_CHOICES
from carla_seg_ros.runtime.model_ladder import BUDGET_FRACTION

NODE_NAME = "seg_node"
QOS_RELIABILITIES = ("reliable", "best_effort")


class StartupError(RuntimeError):
    """The node cannot start: bad parameter, missing/corrupt model, backend that cannot load."""


@dataclass(frozen=True)
class Param:
    """One declared parameter: config/seg.yaml and test/test_launch.py check themselves against this table."""
    name: str
    default: object
    description: str
    low: float | None = None          # numeric range (inclusive); IntegerRange for ints, FloatingPointRange for floats
    high: float | None = None
    choices: tuple = ()               # allowed strings
    constraints: str = ""             # extra text shown by `ros2 param describe`
    dynamic: bool = False             # may change at run time; everything else needs a restart (read-only)

    def descriptor(self) -> ParameterDescriptor:
        types = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
                 float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING,
                 list: ParameterType.PARAMETER_STRING_ARRAY}
        d = ParameterDescriptor(name=self.name, type=types[type(self.default)], description=self.description,
                                read_only=not self.dynamic)
        constraints = [self.constraints] if self.constraints else []
        if self.choices:
            constraints.insert(0, "one of: " + ", ".join(self.choices))
        d.additional_constraints = "; ".join(constraints)
        if isinstance(self.default, int) and not isinstance(self.default, bool):
            d.integer_range = [IntegerRange(from_value=int(self.low), to_value=int(self.high), step=0)]
        elif isinstance(self.default, float):
            d.floating_point_range = [FloatingPointRange(from_value=float(self.low), to_value=float(self.high),
                                                         step=0.0)]
        return d


PARAMETERS = (
    Param("backend", "auto", "Inference runtime. auto: TensorRT when importable and a GPU is present, else the "
          "fastest CPU runtime for the model", choices=BACKEND_CHOICES),
    Param("allow_fallback", False, "When the requested backend cannot load, log why and use the next CPU runtime "
          "instead of failing at startup"),
    Param("model", "auto", "Which model runs. auto: time every rung of the model ladder in models_dir on the "
          "chosen runtime at startup and run the most accurate one whose model call fits the frame budget "
          "(budget_fraction of 1/target_rate), else the fastest with a warning; accurate: carla_unet.onnx (its "
          "checked int8 twin on the CPU runtimes, runtime/model_choice.py); large: carla_unet_large.onnx; fast: "
          "carla_unet_fast.onnx; a path "
          "to an exported .onnx file (runtime/model_ladder.py); or the name of a model `carla-seg adapt` installed "
          "in user_models_dir (`carla-seg models` lists them)",
          constraints="auto, large, accurate, fast, an existing .onnx file exported by `carla-seg export`, or an "
                      "installed user model's name; settable at run time (ros/model_swap.py: loaded and warmed in "
                      "the background, switched between two frames, refused with the reason if unusable)",
          dynamic=True),
    Param("user_models_dir", "", "Folder of the user models that model:=<name> finds (runtime/user_models.py); "
          "empty = $CARLA_SEG_MODELS, else $XDG_DATA_HOME/carla_seg_ros/models (~/.local/share/...)",
          constraints="a folder, or empty"),
    Param("models_dir", "", "Folder holding the ladder's rungs (carla_unet_large.onnx, carla_unet.onnx, "
          "carla_unet_fast.onnx); empty = the package's models/", constraints="an existing folder, or empty"),
    Param("target_rate", 20.0, "model auto: the frame rate (Hz) the chosen rung must keep up with", 0.1, 1000.0),
    # Half: the rest of the frame period is the node's work around the model call (decode, resizes, outputs, grids,
    # DDS: 5-10 ms at 800x600 in `carla-seg bench node`) and headroom for a shared CPU's p99 (1.3-1.5x its median);
    # why not more: runtime/model_ladder.py.
    Param("budget_fraction", BUDGET_FRACTION, "model auto: the share of the frame period (1/target_rate) the model "
          "call may take; the rest is for the work around it (0.5 at 20 Hz: 25 ms of 50)", 0.05, 1.0),
    Param("timing_frame_size", "", "model auto: camera frame size WIDTHxHEIGHT the rungs are timed at (their "
          "input at that aspect); empty = each rung's own 4:3 input size",
          constraints="WIDTHxHEIGHT such as 800x600, or empty"),
    Param("model_path", "", "Deprecated: use model:=<path>. An exported ONNX file; when set it wins over model "
          "(which must then be auto) and the node logs a deprecation warning",
          constraints="an existing .onnx file exported by `carla-seg export`, or empty"),
    Param("threads", 0, "Intra-op threads of the CPU runtime (0 = the runtime's default)", 0, 256),
    Param("opencv_threads", 0, "Threads OpenCV may use for the frame's resizes before and after the model (0 = "
          "OpenCV's default, one per core; 1 = the inference thread alone)", 0, 256),
    Param("background_engine_build", True, "tensorrt/auto: serve frames with a CPU runtime while the TensorRT "
          "engine builds, then switch (false: block startup until the engine is built)"),
    Param("cameras", [], "Cameras this one process segments, batched into one inference call per round: camera "
          "names (subscribes <name>/image) or image topics (/carla/hero/rgb_left/image -> rgb_left); outputs "
          "go to ~/<name>/mask etc. Empty = one camera on the topic `image`, outputs ~/mask etc.",
          constraints="unique names made of letters, digits and _"),
    Param("overlay_alpha", 0.5, "Weight of the palette colours in ~/overlay (0 = camera image only, 1 = colour "
          "mask only)", 0.0, 1.0, dynamic=True),
    Param("ignore_rows_from", 1.0, "~/class_fractions ignores the rows at and below this fraction of the image "
          "height, and the occupancy grids treat them as unseen (1.0 = use every row; 0.825 = the ego hood of "
          "CARLA 0.8 / Lyft-challenge frames)", 0.0, 1.0, dynamic=True),
    # REP-2003 says best-effort for sensor data; we default to RELIABLE (like the CARLA bridge's own publisher)
    # because, measured with a bridge-like 800x600 bgra8 publisher at 20 Hz (test/test_node_qos.py), a best-effort
    # reader got 2-19 % of the frames (one lost fragment of ~30 loses the frame) and a reliable one 100 %; seg_node
    # itself received 119-120 of 120 frames with reliable/10 on an overloaded 2-core machine, 96-120 with depth 5.
    # Newest-only processing keeps the depth from ever becoming a backlog. See config/seg.yaml and
    # docs/concepts/pipeline.md (measurements: docs/history/node.md).
    Param("qos_reliability", "reliable", "Reliability of the image subscription. reliable is the default because "
          "a best-effort reader lost most 800x600 frames in measurements (see docs/concepts/pipeline.md)",
          choices=QOS_RELIABILITIES),
    Param("qos_depth", 10, "KEEP_LAST depth of the image subscription (the node takes every message at once and "
          "keeps only the newest, so this is only room for fragment reassembly, never a backlog)", 1, 1000),
    Param("max_image_pixels", image_codec.DEFAULT_MAX_PIXELS, "Frames with more pixels (width x height) are rejected "
          "as too_large", 1, 2 ** 31 - 1),
    Param("diagnostics_period", 1.0, "Seconds between /diagnostics messages (steady clock, so they keep coming "
          "when sim time stops)", 0.1, 60.0),
    Param("stats_window", 500, "Latency percentiles cover the last this many frames", 10, 100000),
    Param("rate_window", 5.0, "Input/output rates are averaged over this many seconds", 0.5, 600.0),
    Param("warn_throttle", 5.0, "At most one warning per rejection reason per this many seconds", 0.0, 3600.0),
    *(Param(**spec) for spec in OCCUPANCY_PARAMETERS),
    *(Param(**spec) for spec in LOCAL_MAP_PARAMETERS),
)
PARAMETERS_BY_NAME = {p.name: p for p in PARAMETERS}


def declare_parameters(node, specs=None) -> dict:
    """Declare every parameter of ``specs`` (default: seg_node's table; seg_eval_node passes its own) on ``node``
    (a Node or LifecycleNode) once; name -> validated value. StartupError names a bad one."""
    import rclpy

    values = {}
    for spec in PARAMETERS if specs is None else specs:
        try:
            if node.has_parameter(spec.name):      # a lifecycle node configured a second time
                value = node.get_parameter(spec.name).value
            elif isinstance(spec.default, list):
                value = _declare_string_array(node, spec)
            else:
                value = node.declare_parameter(spec.name, spec.default, spec.descriptor()).value
        except rclpy.exceptions.InvalidParameterTypeException as exc:
            strict = isinstance(spec.default, float)
            hint = " (write 1.0, not 1: ROS parameters are strictly typed)" if strict else ""
            raise StartupError(f"parameter {spec.name}: wrong type, expected a {type(spec.default).__name__} "
                               f"like {spec.default!r}{hint} ({exc})") from exc
        except rclpy.exceptions.InvalidParameterValueException as exc:
            raise StartupError(f"parameter {spec.name}: out of range [{spec.low}, {spec.high}] ({exc})") from exc
        if isinstance(spec.default, list):
            value = list(value or [])
        if spec.choices and value not in spec.choices:
            raise StartupError(f"parameter {spec.name}: {value!r} is not one of {', '.join(spec.choices)}")
        values[spec.name] = value
    if "cameras" in values:
        values["cameras"] = camera_streams(values["cameras"])
    return values


def _declare_string_array(node, spec: Param) -> list:
    """Declare a string-array parameter whose value is always set, so the parameter services can return it.

    rclpy infers BYTE_ARRAY from an empty list, and a parameter declared by type alone stays unset when nothing
    overrides it (YAML ``[]`` included), which get_parameters answers with no values at all. So: declare the type,
    writable, give an unset one a typed empty value, then apply the real (read-only) descriptor.
    """
    from rclpy.parameter import Parameter

    descriptor = spec.descriptor()
    writable = spec.descriptor()
    writable.read_only = False
    node.declare_parameter(spec.name, Parameter.Type.STRING_ARRAY, writable)
    if node.get_parameter_or(spec.name).type_ == Parameter.Type.NOT_SET:
        (result,) = node.set_parameters([Parameter(spec.name, Parameter.Type.STRING_ARRAY, [])])
        if not result.successful:
            raise StartupError(f"parameter {spec.name}: cannot set its empty default ({result.reason})")
    node.set_descriptor(spec.name, descriptor)
    return list(node.get_parameter(spec.name).value)


_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def camera_streams(entries) -> list[tuple[str, str]]:
    """``cameras`` entries -> [(name, input topic)]; [] stays [] (the single ``image`` camera).

    A bare name is a camera (topic ``<name>/image``, relative so namespaces and remaps apply); an entry with a
    ``/`` is a topic, named after its camera segment (``/carla/hero/rgb_left/image`` -> ``rgb_left``).
    """
    out, seen = [], set()
    for entry in entries:
        entry = str(entry).strip()
        if "/" in entry:
            parts = [p for p in entry.split("/") if p]
            name = parts[-2] if len(parts) >= 2 and parts[-1] == "image" else (parts[-1] if parts else "")
            topic = entry
        else:
            name, topic = entry, f"{entry}/image"
        if not _NAME.match(name):
            raise StartupError(f"parameter cameras: {entry!r} gives no valid camera name (letters, digits, _)")
        if name in seen:
            raise StartupError(f"parameter cameras: camera name {name!r} appears twice ({list(entries)})")
        seen.add(name)
        out.append((name, topic))
    return out


# Each camera of a multi-camera node sits elsewhere on the vehicle, so these may be set per camera:
# `<camera>.camera_yaw` (in YAML, `rgb_left: {camera_yaw: 60.0}` under ros__parameters), defaulting to the
# node-wide value. Grid extent, ground and frame stay node-wide: one vehicle, one ground, one grid layout.
MOUNT_PARAMETERS = ("camera_x", "camera_y", "camera_z", "camera_roll", "camera_pitch", "camera_yaw")


def declare_camera_mount(node, camera: str) -> dict:
    """Declare ``<camera>.camera_x`` ... on ``node`` (once) with the node-wide values as defaults; name -> value."""
    import rclpy

    out = {}
    for name in MOUNT_PARAMETERS:
        spec, full = PARAMETERS_BY_NAME[name], f"{camera}.{name}"
        descriptor = spec.descriptor()
        descriptor.name = full
        try:
            if node.has_parameter(full):
                out[name] = node.get_parameter(full).value
            else:
                out[name] = node.declare_parameter(full, node.p[name], descriptor).value
        except rclpy.exceptions.InvalidParameterTypeException as exc:
            raise StartupError(f"parameter {full}: wrong type, expected a float like {spec.default!r} "
                               f"(write 1.0, not 1: ROS parameters are strictly typed) ({exc})") from exc
        except rclpy.exceptions.InvalidParameterValueException as exc:
            raise StartupError(f"parameter {full}: out of range [{spec.low}, {spec.high}] ({exc})") from exc
    return out
