"""`--help` for the package's nodes: usage, topics (the module docstring), every declared parameter with its default,
range or choices, and a launch example. Printed without starting ROS, so it works where no DDS is reachable."""
from __future__ import annotations

import rclpy


def wants_help(argv: list[str]) -> bool:
    """True when -h/--help is among the node's own arguments (not inside --ros-args)."""
    return bool({"-h", "--help"} & set(rclpy.utilities.remove_ros_args(argv)[1:]))


def _constraints(spec) -> str:
    parts = []
    if spec.choices:
        parts.append("one of: " + ", ".join(spec.choices))
    if spec.low is not None and spec.high is not None and not isinstance(spec.default, bool):
        parts.append(f"range {spec.low:g}..{spec.high:g}")
    if spec.constraints:
        parts.append(spec.constraints)
    parts.append("dynamic" if spec.dynamic else "read-only")
    return "; ".join(parts)


def usage(executable: str, doc: str, parameters, flags: str = "", examples: tuple[str, ...] = ()) -> str:
    """The help text: the synopsis, ``doc`` (what the node subscribes and publishes), then the parameters."""
    lines = [f"usage: {executable} [-h]{(' ' + flags) if flags else ''} [--ros-args -p NAME:=VALUE ... "
             f"| --params-file FILE]", "", doc.strip(), "", "parameters (ros2 param describe shows the same):"]
    for spec in parameters:
        lines.append(f"  {spec.name} (default {spec.default!r}; {_constraints(spec)})")
        lines.append(f"      {spec.description}")
    if examples:
        lines += ["", "examples:"] + [f"  {line}" for line in examples]
    return "\n".join(lines)
