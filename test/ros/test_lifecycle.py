"""seg_node --managed driven through the standard lifecycle services from a client node, over real DDS:
configure loads the model (no I/O yet), activate starts the subscription and outputs, deactivate stops them without
unloading, cleanup releases the backend, shutdown finalizes; the process then exits cleanly."""
from __future__ import annotations

import time

import pytest

pytest.importorskip("rclpy", reason="ROS 2 wheels (extra `ros`) are not installed")
pytest.importorskip("lifecycle_msgs", reason="ros-kilted-lifecycle-msgs is not installed")
from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402

from seg_probe import Probe, start_node, stop_node, wait_for  # noqa: E402

TOPIC = "/lifecycle_test/camera/image"
NODE = "/seg_node"


class Lifecycle:
    def __init__(self, probe, proc, log):
        self.probe, self.proc, self.log = probe, proc, log
        self.change = probe.node.create_client(ChangeState, f"{NODE}/change_state")
        self.get = probe.node.create_client(GetState, f"{NODE}/get_state")

    def _call(self, client, request):
        wait_for(lambda: client.wait_for_service(timeout_sec=0.1), 90, client.srv_name, self.proc, self.log)
        future = client.call_async(request)
        wait_for(future.done, 60, f"{client.srv_name} reply", self.proc, self.log)
        return future.result()

    def state(self) -> str:
        return self._call(self.get, GetState.Request()).current_state.label

    def transition(self, transition_id: int) -> bool:
        return self._call(self.change, ChangeState.Request(transition=Transition(id=transition_id))).success


def test_lifecycle_transitions_through_the_standard_services(tmp_path):
    log = tmp_path / "node.log"
    probe = Probe("lifecycle_probe")
    proc = start_node(log, "-r", f"image:={TOPIC}", managed=True)
    try:
        camera = probe.camera(TOPIC)
        probe.record(f"{NODE}/mask")
        lc = Lifecycle(probe, proc, log)
        frames = iter(range(1, 10_000))

        def answered(timeout: float) -> bool:
            # A new frame every second until one is answered: the publisher may see the node's subscription
            # before the node has matched the publisher (slow discovery on a loaded machine), and a frame sent in
            # between is lost to a volatile subscription, so one single frame would test the machine's speed.
            sent = []
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                sent.append(next(frames) * 1_000_000)
                camera.publish(probe.frame(160, 120, "cam", sent[-1]))
                try:
                    wait_for(lambda: any(s in probe.got(f"{NODE}/mask") for s in sent),
                             min(1.0, max(0.0, end - time.monotonic())), "a mask")
                    return True
                except AssertionError:
                    continue
            return False

        assert lc.state() == "unconfigured"
        assert camera.get_subscription_count() == 0
        assert lc.transition(Transition.TRANSITION_CONFIGURE)
        assert lc.state() == "inactive"
        assert "backend" in log.read_text() and camera.get_subscription_count() == 0     # model loaded, no I/O
        assert lc.transition(Transition.TRANSITION_ACTIVATE) and lc.state() == "active"
        wait_for(lambda: camera.get_subscription_count() >= 1, 20, "the camera subscription", proc, log)
        assert answered(60)
        assert lc.transition(Transition.TRANSITION_DEACTIVATE) and lc.state() == "inactive"
        wait_for(lambda: camera.get_subscription_count() == 0, 20, "the subscription to go", proc, log)
        assert not answered(8)         # inactive: a frame a second for 8 s, none answered
        loads = log.read_text().count("loaded for")
        assert lc.transition(Transition.TRANSITION_ACTIVATE)
        wait_for(lambda: camera.get_subscription_count() >= 1, 20, "the camera subscription again", proc, log)
        assert answered(60)
        assert log.read_text().count("loaded for") == loads, "re-activation must not reload the model"
        assert lc.transition(Transition.TRANSITION_DEACTIVATE)
        assert lc.transition(Transition.TRANSITION_CLEANUP) and lc.state() == "unconfigured"
        assert "backend released" in log.read_text()
        assert lc.transition(Transition.TRANSITION_CONFIGURE) and lc.state() == "inactive"   # configurable again
        assert lc.transition(Transition.TRANSITION_INACTIVE_SHUTDOWN)
        assert lc.state() == "finalized"
        time.sleep(0.2)
    finally:
        rc = stop_node(proc)
        probe.close()
    text = log.read_text()
    assert rc == 0 and "Traceback" not in text, text


def test_configure_fails_cleanly_on_a_bad_parameter(tmp_path):
    log = tmp_path / "node.log"
    probe = Probe("lifecycle_probe_bad")
    proc = start_node(log, "-p", "model_path:=/nonexistent/model.onnx", managed=True)
    try:
        lc = Lifecycle(probe, proc, log)
        assert not lc.transition(Transition.TRANSITION_CONFIGURE)
        assert lc.state() == "unconfigured"
        assert "configure failed: model_path" in log.read_text()
    finally:
        rc = stop_node(proc)
        probe.close()
    assert rc == 0, log.read_text()
