"""seg_eval_node over real DDS when the stream is not clean: late masks, missing frames, bad frames, bad parameters.

One real node process runs three runs in a row (separated by its ~/reset service), fed by a real publisher from a
bag made by `carla-seg make-bag` + `bag-eval --write-bag` (bag-eval's own masks, 13-tag palette ground truth):

1. masks published three frames late: the plain score (stamp pairing) still equals bag-eval's, the timely score
   is lower, with the first frames counted as having no mask in time and the rest as stale;
2. missing masks and missing ground truth, a ground-truth frame of another size, unknown palette colours, a
   colour "mask" and a mask with an impossible class id: all counted, nothing guessed, the node keeps running and
   writes its report when stopped with Ctrl-C (SIGINT).
"""
from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 wheels (extra `ros`) are not installed")
pytest.importorskip("std_srvs", reason="ros-kilted-std-srvs (extra `ros`) is not installed")

from eval_helpers import (FRAME_NS, GT_TOPIC, MASK_TOPIC, NODE, MetricsWatch, assert_same_metrics,  # noqa: E402
                          dds_env, eval_node, make_bags, player as make_player, read_frames)

from carla_seg_ros import image_codec  # noqa: E402

FRAMES = 5
LATE = 3


def stamp_of(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def restamped(msg, ns: int):
    out = copy.deepcopy(msg)
    out.header.stamp.sec, out.header.stamp.nanosec = divmod(ns, 10**9)
    return out


def play_late(watch, proc, gts, masks):
    """Frame i's mask is published with frame i + LATE's ground truth: LATE ticks after its stamp.

    Each tick waits until the node has taken it (MetricsWatch.tick), so the lateness is exactly LATE ticks on the
    node's clock, not LATE ticks plus however far a loaded machine lets the node fall behind.
    """
    stamps = [stamp_of(g) for g in gts]
    for i, gt in enumerate(gts):
        watch.tick(stamps[i], [(GT_TOPIC, gt), *([(MASK_TOPIC, masks[i - LATE])] if i >= LATE else [])], proc)
    for k, mask in enumerate(masks[len(gts) - LATE:]):
        watch.tick(stamps[-1] + (k + 1) * FRAME_NS, [(MASK_TOPIC, mask)], proc)
    watch.tick(stamps[-1] + 40 * FRAME_NS, [], proc)


def bad_frames(gts, masks):
    """(gt, mask) per extra frame after the clean ones; see the module docstring."""
    base = stamp_of(gts[-1]) + FRAME_NS
    gt, mask = gts[0], masks[0]
    pixels = np.array(image_codec.pixels(gt))
    small = image_codec.to_image(np.ascontiguousarray(pixels[:70]), "bgra8", copy.deepcopy(gt.header))
    odd = pixels.copy()
    odd[:10, :20, :3] = (3, 2, 1)                                 # BGR of RGB (1, 2, 3): in no palette
    odd_gt = image_codec.to_image(odd, "bgra8", copy.deepcopy(gt.header))
    ids = np.array(image_codec.pixels(mask))[..., 0]
    colour_mask = image_codec.to_image(np.dstack([ids] * 3), "rgb8", copy.deepcopy(mask.header))
    bad_ids = ids.copy()
    bad_ids[0, 0] = 200
    bad_mask = image_codec.to_image(bad_ids, "mono8", copy.deepcopy(mask.header))
    pairs = [(small, mask), (odd_gt, mask), (gt, colour_mask), (gt, bad_mask)]
    return [(restamped(g, base + k * FRAME_NS), restamped(m, base + k * FRAME_NS)) for k, (g, m) in enumerate(pairs)]


@pytest.fixture(scope="module")
def pred_bag(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("live")
    return make_bags(root, data_dir, "t13", ["--split", "test", "--limit", str(FRAMES)], [])


def test_late_missing_and_bad_frames(pred_bag, tmp_path):
    pred, expected = pred_bag
    gts, masks = read_frames(pred)
    out = tmp_path / "node"
    proc = eval_node(out, tmp_path / "node.log", timely_budget=0.05, match_window=1.0)
    with proc, make_player() as player:
        for topic in (GT_TOPIC, MASK_TOPIC):
            player.publisher(topic, type(gts[0]))
        player.wait_subscribed([GT_TOPIC, MASK_TOPIC], timeout=60, check=proc.check)
        watch = MetricsWatch(player)

        # 1. late masks
        play_late(watch, proc, gts, masks)
        watch.wait(lambda m: m["pairing"]["paired"] == FRAMES and m["timely"]["frames"] == FRAMES, 60, proc,
                   "all late pairs")
        assert player.call_trigger(f"{NODE}/write_report").success
        late = json.loads((out / "metrics.json").read_text())
        assert_same_metrics(late, expected)            # stamp pairing does not care when a mask came
        t = late["timely"]
        # Ground truth i is read at t_i + one tick (the budget), and mask i comes at t_(i+LATE) at the earliest
        # (t_(i+LATE-1) if the node sees it before that tick's /clock): never in time for its own frame. So every
        # frame is scored with an older frame's mask or with none; frame 0 has none at all.
        assert t["frames"] == FRAMES and t["no_mask_frames"] + t["stale_frames"] == FRAMES
        assert t["no_mask_frames"] >= 1 and t["stale_frames"] >= 1
        assert t["metrics"]["mean_iou"] < late["metrics"]["mean_iou"]
        assert t["metrics"]["pixel_accuracy"] < late["metrics"]["pixel_accuracy"]
        assert late["mask_latency_ms"]["p50"] >= LATE * FRAME_NS / 1e6 - 1     # measured on the sim clock

        # 2. missing and bad frames, after a reset
        assert player.call_trigger(f"{NODE}/reset").success
        watch.wait(lambda m: m["pairing"]["mask_messages"] == 0, 10, proc, "the reset")
        watch.reset_counts()
        for i, (gt, mask) in enumerate(zip(gts, masks)):
            watch.tick(stamp_of(gt), [*([(GT_TOPIC, gt)] if i != 1 else []),
                                      *([(MASK_TOPIC, mask)] if i != 3 else [])], proc)
        for gt, mask in bad_frames(gts, masks):
            watch.tick(stamp_of(gt), [(GT_TOPIC, gt), (MASK_TOPIC, mask)], proc)
        live = watch.wait(lambda m: m["pairing"]["gt_messages"] == FRAMES - 1 + 4 and
                          m["pairing"]["mask_messages"] == FRAMES - 1 + 4, 60, proc, "the bad frames")
        assert live["skipped"] == {"size_mismatch": 1, "mask:not_mono8": 1, "mask:class_out_of_range": 1}
        assert live["unknown_color_pixels"] == 10 * 20
        watch.close()
        assert player.call_trigger(f"{NODE}/write_report").success     # still answering
        assert proc.stop() == 0                                         # SIGINT: clean exit, report written
    final = json.loads((out / "metrics.json").read_text())
    assert final["pairing"]["unmatched_mask"] == 1 and final["pairing"]["unmatched_gt"] == 1
    assert final["pairing"]["paired"] == 3 + 2 and final["frames"] == 3 + 1     # clean 0, 2, 4 + odd colours
    assert final["skipped"] == live["skipped"] and final["unknown_color_pixels"] == 200
    assert "400x300 and ground truth 400x70" in final["skip_messages"]["size_mismatch"]
    assert "carla_objects.json" in final["skip_messages"]["size_mismatch"]
    assert final["timely"]["stale_frames"] >= 1                 # ground truth 1 had only mask 0
    log = (tmp_path / "node.log").read_text()
    assert "wrote" in log and "metrics.json" in log and "[not_mono8]" not in log


@pytest.mark.parametrize("param, needle", [("coding:=tags31", "tags31"), ("gt_format:=rgb", "rgb"),
                                           ("stamp_tolerance:=-1.0", "stamp_tolerance")])
def test_bad_parameters_stop_startup_with_one_clear_line(param, needle):
    proc = subprocess.run([sys.executable, "-m", "carla_seg_ros.ros.seg_eval_node", "--ros-args", "-p", param],
                          capture_output=True, text=True, timeout=60, env=dds_env())
    assert proc.returncode == 2, proc.stderr
    line = [x for x in proc.stderr.splitlines() if "startup failed" in x]
    assert line and needle in line[0], proc.stderr


def test_help_lists_the_parameters():
    proc = subprocess.run([sys.executable, "-m", "carla_seg_ros.ros.seg_eval_node", "--help"], capture_output=True,
                          text=True, timeout=60, env=dds_env())
    assert proc.returncode == 0, proc.stderr
    for name in ("mask_topic", "gt_topic", "coding", "timely_budget", "write_report"):
        assert name in proc.stdout
