"""seg_node as a managed (lifecycle) node: the same SegPipeline, driven by the standard lifecycle transitions.

    unconfigured --configure--> inactive   parameters read, model loaded and warmed (startup errors fail here)
    inactive     --activate---> active     camera subscriptions, outputs, /diagnostics and the inference thread
    active       --deactivate-> inactive   all of those destroyed; the model stays loaded for a fast re-activate
    inactive     --cleanup----> unconfigured  backend released
    any          --shutdown---> finalized

Started by ``seg_node --managed`` (launch: ``managed:=true`` -> launch_ros LifecycleNode); driven through
``/<ns>/seg_node/change_state`` and ``get_state`` (``ros2 lifecycle set /seg_node configure``).
"""
from __future__ import annotations

from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn

from carla_seg_ros.ros.seg_node import SegPipeline
from carla_seg_ros.ros.seg_params import NODE_NAME, StartupError


class ManagedSegNode(SegPipeline, LifecycleNode):
    def __init__(self, **kwargs):
        LifecycleNode.__init__(self, NODE_NAME, **kwargs)
        self.get_logger().info("seg_node (managed) waiting in state unconfigured: send `configure`")

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            self._configure_pipeline()
        except StartupError as exc:
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f"configured: backend {self.manager.backend.name}, model {self.model_path}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        self._activate_pipeline()
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._deactivate_pipeline()
        self.get_logger().info("deactivated: subscriptions and outputs stopped, model kept loaded")
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self.close()
        self.get_logger().info("cleaned up: backend released")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self.close()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: State) -> TransitionCallbackReturn:
        self.close()
        return TransitionCallbackReturn.SUCCESS
