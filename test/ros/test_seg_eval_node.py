"""seg_eval_node over real DDS: its final metrics equal `carla-seg bag-eval`'s on the same frames, to the last digit.

For each ground-truth form (13/23/29-tag codings, palette colours and raw ids) a bag is made by `carla-seg
make-bag`; `bag-eval --write-bag` evaluates it and writes its own predicted masks next to the ground truth. A
real publisher then plays those masks and the ground truth with sim-time stamps and a /clock, like the bridge and
seg_node would, to a real seg_eval_node process; the node's metrics.json (written through its ~/write_report
service) must hold bag-eval's confusion matrix, metrics and per-frame figures. The player moves the clock on only once
the node has taken the frame (its ~/metrics say so), so every mask arrives in time at any machine speed and the
timely score must equal the plain one.
"""
from __future__ import annotations

import json

import pytest

pytest.importorskip("rclpy", reason="ROS 2 wheels (extra `ros`) are not installed")
pytest.importorskip("std_srvs", reason="ros-kilted-std-srvs (extra `ros`) is not installed")

from eval_helpers import (FRAME_NS, GT_TOPIC, MASK_TOPIC, NODE, MetricsWatch, assert_same_metrics,  # noqa: E402
                          eval_node, make_bags, player as make_player, read_frames)

FRAMES = 5


def play_in_time(watch: MetricsWatch, proc, gts: list, masks: list) -> int:
    """Each frame: /clock, ground truth, then its mask; the clock moves on only once the node has taken both.

    So every mask is in time for its own frame on the node's clock whatever the load on the machine (a fixed
    pause between frames let a slow node see the next /clock before the mask, and score the frame with an older
    one). Returns the last stamp.
    """
    last = 0
    for gt, mask in zip(gts, masks):
        stamp = gt.header.stamp.sec * 10**9 + gt.header.stamp.nanosec
        watch.tick(stamp, [(GT_TOPIC, gt), (MASK_TOPIC, mask)], proc)
        last = stamp
    watch.tick(last + 20 * FRAME_NS, [], proc)   # every timely deadline has passed
    return last


def run_node_on(tmp_path, pred_bag, name: str, **params) -> dict:
    gts, masks = read_frames(pred_bag)
    out = tmp_path / f"{name}_node"
    # The default timely budget (one tick): play_in_time's acknowledgements keep every mask in time at any speed.
    with eval_node(out, tmp_path / f"{name}.log", **params) as proc, make_player() as player:
        for topic in (GT_TOPIC, MASK_TOPIC):
            player.publisher(topic, type(gts[0]))
        player.wait_subscribed([GT_TOPIC, MASK_TOPIC], timeout=60, check=proc.check)
        watch = MetricsWatch(player)
        play_in_time(watch, proc, gts, masks)
        n = len(gts)
        live = watch.wait(lambda m: m["pairing"]["paired"] == n and m["timely"]["frames"] == n, 60, proc,
                          f"{n} pairs and {n} timely frames")
        watch.wait(lambda m: watch.diagnostics is not None and watch.diagnostics["frames_paired"] == str(n), 30,
                   proc, "/diagnostics with every pair")
        diag = watch.diagnostics
        assert diag["run_miou"] == f"{live['run']['mean_iou']:.4f}" == diag["window_miou"] == diag["timely_miou"]
        assert diag["run_pixel_accuracy"] == f"{live['run']['pixel_accuracy']:.4f}"
        watch.close()
        response = player.call_trigger(f"{NODE}/write_report")
        assert response.success, response.message
        assert response.message == str(out / "metrics.json")
    return json.loads((out / "metrics.json").read_text())


CASES = {   # name: (dataset fixture, make-bag args, bag-eval args, node parameters)
    "tags13_palette": ("data_dir", ["--split", "test"], [], {}),
    "tags13_ids": ("data_dir", ["--split", "test", "--raw-ids"], ["--gt-format", "ids"],
                   {"coding": "tags13"}),
    "tags23_palette": ("modern_dir", ["--coding", "tags23"], [], {}),
    "tags29_ids": ("modern_dir", ["--coding", "tags29", "--raw-ids"], ["--gt-format", "ids"],
                   {"coding": "tags29", "gt_format": "ids"}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_node_metrics_equal_bag_eval(case, tmp_path, request):
    fixture, make_args, eval_args, params = CASES[case]
    data = request.getfixturevalue(fixture)
    pred, expected = make_bags(tmp_path, data, case, make_args + ["--limit", str(FRAMES)], eval_args)
    got = run_node_on(tmp_path, pred, case, **params)

    assert_same_metrics(got, expected)
    assert got["coding"] == expected["coding"]      # auto found the palette's coding (23 tags here) itself
    assert got["pairing"]["paired"] == expected["pairing"]["paired"] == got["frames"]
    assert got["pairing"]["unmatched_mask"] == got["pairing"]["unmatched_gt"] == 0
    assert got["skipped"] == {} and got["unknown_color_pixels"] == expected["unknown_color_pixels"]
    assert got["unknown_id_pixels"] == expected["unknown_id_pixels"]
    # Every mask arrived before the clock moved on: the timely score is the plain score exactly.
    timely = got["timely"]
    assert timely["frames"] == got["frames"] and timely["no_mask_frames"] == timely["stale_frames"] == 0
    for key in ("pixel_accuracy", "mean_iou", "iou"):
        assert timely["metrics"][key] == got["metrics"][key], key
    assert timely["confusion_matrix"] == got["confusion_matrix"]
    html = (tmp_path / f"{case}_node" / "report.html").read_text()
    assert "timely mIoU" in html and "data:image/png;base64," in html
    assert (tmp_path / f"{case}_node" / "report.md").is_file()
