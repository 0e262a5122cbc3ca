"""Shared by the seg_eval_node tests: bags made by make-bag + bag-eval, a real node process, a bag player."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from carla_seg_ros.evaluation.bag_eval import main as bag_eval_main
from carla_seg_ros.evaluation.bag_make import main as make_bag_main, topics
from carla_seg_ros.ros.playback import NodeProcess, node_argv

DOMAIN_ID = 43
# Other tests share the domain (test_node.py publishes /seg_node/mask and a wall-time /clock on 43 too), so every
# topic of these tests, /clock included, lives under a namespace of this process.
PREFIX = f"/evaltest{os.getpid()}"
BAG_MASK_TOPIC = "/seg_node/mask"
BAG_GT_TOPIC = topics("ego_vehicle")["semantic"]
MASK_TOPIC = PREFIX + BAG_MASK_TOPIC
GT_TOPIC = PREFIX + BAG_GT_TOPIC
CLOCK_TOPIC = PREFIX + "/clock"
NODE = PREFIX + "/seg_eval_node"
FRAME_NS = 50_000_000          # make-bag's default 20 Hz


def dds_env() -> dict:
    return dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN_ID), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                PYTHONUNBUFFERED="1")


def make_bags(root: Path, data: Path, name: str, make_args: list[str], eval_args: list[str]) -> tuple[Path, dict]:
    """make-bag, then bag-eval with --write-bag: the prediction bag holds bag-eval's own masks with the ground truth.

    Returns (prediction bag, bag-eval's metrics.json).
    """
    bag, pred, out = root / f"{name}_bag", root / f"{name}_pred", root / f"{name}_bag_eval"
    assert make_bag_main(["--data", str(data), "--out", str(bag), *make_args]) == 0
    assert bag_eval_main([str(bag), "--out", str(out), "--batch-size", "1", "--write-bag", str(pred),
                          *eval_args]) == 0
    return pred, json.loads((out / "metrics.json").read_text())


def eval_node(out_dir: Path, log: Path, **params) -> NodeProcess:
    base = {"use_sim_time": True, "output_dir": str(out_dir), "metrics_period": 0.2, "mask_topic": MASK_TOPIC,
            "gt_topic": GT_TOPIC}
    argv = node_argv("carla_seg_ros.ros.seg_eval_node", "seg_eval_node", {**base, **params},
                     {"__ns": PREFIX, "/clock": CLOCK_TOPIC})
    return NodeProcess("seg_eval_node", argv, log, env=dds_env())


def player():
    from carla_seg_ros.ros.playback.bag_player import BagPlayer
    return BagPlayer(domain_id=DOMAIN_ID, clock_topic=CLOCK_TOPIC)


def read_frames(pred_bag) -> tuple[list, list]:
    """(ground-truth messages, mask messages) of a bag-eval prediction bag."""
    from carla_seg_ros.ros.playback.bag_player import read_bag
    msgs = read_bag(pred_bag, [BAG_GT_TOPIC, BAG_MASK_TOPIC])
    return msgs[BAG_GT_TOPIC], msgs[BAG_MASK_TOPIC]


class MetricsWatch:
    """The node's ~/metrics JSON, latest message; ``tick`` plays one clock tick and waits for the node to take it."""

    def __init__(self, player):
        from diagnostic_msgs.msg import DiagnosticArray
        from std_msgs.msg import String
        self.latest = None
        self.diagnostics = None        # our node's DiagnosticStatus key/values (other nodes share /diagnostics)
        self.player = player
        self.subscriptions = [player.node.create_subscription(String, f"{NODE}/metrics", self._cb, 10),
                              player.node.create_subscription(DiagnosticArray, "/diagnostics", self._diag, 10)]
        self.executor = player.executor
        self.sent = {MASK_TOPIC: 0, GT_TOPIC: 0}      # messages published by tick() since the last reset_counts()

    def _cb(self, msg):
        self.latest = json.loads(msg.data)

    def _diag(self, msg):
        for status in msg.status:
            if status.name == f"{NODE}: evaluation":
                self.diagnostics = {kv.key: kv.value for kv in status.values}

    def wait(self, predicate, timeout: float, process: NodeProcess, what: str) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.05)
            process.check()
            if self.latest is not None and predicate(self.latest):
                return self.latest
        raise AssertionError(f"timed out waiting for {what}; last ~/metrics: {self.latest}\n{process.tail()}")

    def tick(self, stamp: int, items, process: NodeProcess, timeout: float = 60.0) -> dict:
        """/clock = ``stamp``, then ``items`` ((topic, message) pairs); returns once the node has taken all of them.

        The acknowledgement is the node's own ~/metrics: its clock (``stamp_ns``) is ``stamp`` and it has counted
        every mask and ground-truth message published so far. So the next tick's /clock can never overtake this
        tick's frames, however slowly a loaded machine runs the node: what the node scores depends on the order
        of the messages only, never on how fast it runs. /clock is best effort (rclpy's TimeSource), so it is
        sent again while the node's clock has not reached it.
        """
        self.player.clock(stamp)
        for topic, msg in items:
            self.player.publish(topic, msg)
            self.sent[topic] += 1
        want = dict(self.sent)
        resend = time.monotonic() + 0.5
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.05)
            process.check()
            m = self.latest
            if m is not None and m["stamp_ns"] == stamp and m["pairing"]["mask_messages"] == want[MASK_TOPIC] \
                    and m["pairing"]["gt_messages"] == want[GT_TOPIC]:
                return m
            if time.monotonic() > resend and (m is None or m["stamp_ns"] != stamp):
                self.player.clock(stamp)
                resend = time.monotonic() + 0.5
        raise AssertionError(f"timed out waiting for the node to take the tick at t={stamp / 1e9:.3f}s "
                             f"({want} sent); last ~/metrics: {self.latest}\n{process.tail()}")

    def reset_counts(self) -> None:
        """After the node's ~/reset: its message counts start from zero again."""
        self.sent = {MASK_TOPIC: 0, GT_TOPIC: 0}

    def close(self):
        for sub in self.subscriptions:
            self.player.node.destroy_subscription(sub)


def assert_same_metrics(node: dict, bag_eval: dict) -> None:
    """Exact equality of the confusion matrix, every metric and the per-frame figures (timings aside)."""
    assert node["confusion_matrix"] == bag_eval["confusion_matrix"]
    a, b = json.loads(json.dumps(node["metrics"])), json.loads(json.dumps(bag_eval["metrics"]))
    for m in (a, b):
        m["lyft"].pop("fps", None)
        m["lyft"].pop("score", None)
    assert a == b
    assert node["per_frame"] == bag_eval["per_frame"]
    assert node["frames"] == bag_eval["frames"]
