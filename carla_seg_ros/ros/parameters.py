"""Declaring a node's parameter table (``seg_node.Param`` entries) with one clear error per bad value."""
from __future__ import annotations

import rclpy


class ParameterError(RuntimeError):
    """A parameter has the wrong type, is out of range or is not one of its choices."""


def declare_parameters(node, specs) -> dict:
    """Declare every ``Param`` of ``specs`` on ``node`` (descriptions, ranges, read-only) and return the values."""
    values = {}
    for spec in specs:
        try:
            value = node.declare_parameter(spec.name, spec.default, spec.descriptor()).value
        except rclpy.exceptions.InvalidParameterTypeException as exc:
            hint = " (write 1.0, not 1: ROS parameters are strictly typed)" if isinstance(spec.default, float) else ""
            raise ParameterError(f"parameter {spec.name}: wrong type, expected a {type(spec.default).__name__} "
                                 f"like {spec.default!r}{hint} ({exc})") from exc
        except rclpy.exceptions.InvalidParameterValueException as exc:
            raise ParameterError(f"parameter {spec.name}: out of range [{spec.low}, {spec.high}] ({exc})") from exc
        if spec.choices and value not in spec.choices:
            raise ParameterError(f"parameter {spec.name}: {value!r} is not one of {', '.join(spec.choices)}")
        values[spec.name] = value
    return values
