"""Set a running seg_node's ``model`` through its parameter service (what `ros2 param set NODE model X` does):
`carla-seg adapt --swap NODE` runs this after installing a model.

    python -m carla_seg_ros.ros.model_swap_client /seg_node town03

Exit 0 when the node accepted the swap (it then loads the model in the background and switches between two
frames: ros/model_swap.py), 1 with the node's reason when it refused, 2 when the node's service did not answer.
"""
from __future__ import annotations

import argparse
import sys


def set_model(node_name: str, spec: str, timeout: float = 10.0) -> tuple[bool, str]:
    """(accepted, reason) of SetParameters([model=spec]) on ``node_name``; TimeoutError if there is no answer."""
    import rclpy
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    own_context = not rclpy.ok()
    if own_context:
        rclpy.init()
    node = rclpy.create_node("carla_seg_model_swap_client")
    try:
        service = node_name.rstrip("/") + "/set_parameters"
        client = node.create_client(SetParameters, service)
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"no parameter service {service} (is the node running, in this ROS_DOMAIN_ID?)")
        request = SetParameters.Request(parameters=[Parameter(
            name="model", value=ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=spec))])
        future = client.call_async(request)
        rclpy.spin_until_future_complete(node, future, timeout_sec=timeout)
        if not future.done() or future.result() is None:
            raise TimeoutError(f"{service} did not answer within {timeout:g} s")
        result = future.result().results[0]
        return bool(result.successful), result.reason
    finally:
        node.destroy_node()
        if own_context:
            rclpy.shutdown()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="model_swap_client", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("node", help="the seg_node's full name, e.g. /seg_node")
    p.add_argument("model", help="an installed model's name, a path to an .onnx file, or auto/accurate/fast")
    p.add_argument("--models-dir", help="unused by the node (it has its own user_models_dir); kept for the log")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the node (default: %(default)s)")
    args = p.parse_args(argv)
    try:
        ok, reason = set_model(args.node, args.model, args.timeout)
    except TimeoutError as exc:
        print(f"model swap: {exc}", file=sys.stderr)
        return 2
    if not ok:
        print(f"model swap: {args.node} refused: {reason}", file=sys.stderr)
        return 1
    print(f"model swap: {args.node} accepted {args.model} ({reason})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
