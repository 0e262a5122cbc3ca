"""Self-training: pseudo-label rules (thresholds, box guidance), augmentation shapes, the EMA teacher, and a short
real run of `carla-seg self-train` on real frames that resumes where it stopped."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from carla_seg_ros import classes
from carla_seg_ros.learning import distillation as dist
from carla_seg_ros.learning import pseudo_labels as pl
from carla_seg_ros.learning import self_train as st
from carla_seg_ros.learning.target_augment import (WEATHERS, class_mix, crop_width, random_crop,
                                                   strong_photometric)
from carla_seg_ros.paths import models_dir
from carla_seg_ros.unlabelled import Box, UnlabelledFrame

CAR = classes.class_names().index("Car")
ROAD = classes.class_names().index("Road")
IGNORE = classes.IGNORE_INDEX


def probs_for(label: np.ndarray, conf: float) -> torch.Tensor:
    """(1, C, H, W) probabilities whose argmax is ``label`` with max probability ``conf``."""
    c = classes.num_classes()
    p = np.full((c,) + label.shape, (1 - conf) / (c - 1), np.float32)
    for k in range(c):
        p[k][label == k] = conf
    return torch.from_numpy(p)[None]


def frame_with(boxes, has_boxes=True):
    return UnlabelledFrame("relke_000001.jpg", Path("x"), "relke", 1, "", tuple(boxes), has_boxes)


def test_box_map_bits():
    fr = frame_with([Box("car", 10, 10, 20, 20), Box("person", 40, 10, 44, 20)])
    m = pl.box_map(fr, (64, 32), (64, 32))
    assert (m & pl.BOXED).all()
    assert m[15, 15] & pl.IN_VEHICLE and not m[15, 42] & pl.IN_VEHICLE   # a person box is no vehicle box
    assert m[15, 42] & pl.NEAR_BOX and m[15, 7] & pl.NEAR_BOX           # grown by half the box's size
    assert not m[15, 30] & pl.NEAR_BOX and not m[2, 2] & pl.NEAR_BOX
    assert not pl.box_map(frame_with([], has_boxes=False), (64, 32), (64, 32)).any()


def test_pseudo_labels_box_guidance():
    label = np.full((16, 32), ROAD, np.int64)
    label[4:8, 4:8] = CAR      # Car inside a vehicle box
    label[4:8, 24:28] = CAR    # Car far from every box
    bmap = np.full((16, 32), pl.BOXED, np.uint8)
    bmap[2:10, 2:12] |= pl.NEAR_BOX
    bmap[3:9, 3:10] |= pl.IN_VEHICLE          # road pixels inside the vehicle box too
    thresholds = pl.ClassThresholds(classes.num_classes(), 0.5, 0.9)
    out = pl.pseudo_labels(probs_for(label, 0.7), torch.from_numpy(bmap)[None], thresholds, CAR)[0].numpy()
    assert (out[4:8, 4:8] == CAR).all()             # Car in a vehicle box needs only 0.5
    assert (out[4:8, 24:28] == IGNORE).all()        # Car far from every box is never taught
    assert (out[3:9, 8:10] == IGNORE).all()         # non-Car inside a vehicle box needs 0.99
    assert (out[12:, :] == IGNORE).all()            # 0.7 < 0.9: the start threshold of every class
    out = pl.pseudo_labels(probs_for(label, 0.995), torch.from_numpy(bmap)[None], thresholds, CAR)[0].numpy()
    assert (out[3:9, 8:10] == ROAD).all() and (out[12:, :] == ROAD).all()


def test_pseudo_labels_without_boxes_teach_car_anywhere():
    label = np.full((8, 8), CAR, np.int64)
    thresholds = pl.ClassThresholds(classes.num_classes(), 0.5, 0.9)
    out = pl.pseudo_labels(probs_for(label, 0.95), torch.zeros((1, 8, 8), dtype=torch.uint8), thresholds, CAR)
    assert (out == CAR).all()


def test_class_thresholds_follow_the_median_within_bounds():
    t = pl.ClassThresholds(3, 0.5, 0.9, momentum=0.0)
    label = torch.tensor([0] * 100 + [1] * 100 + [2] * 100)
    conf = torch.cat([torch.full((100,), 0.99), torch.full((100,), 0.7), torch.full((100,), 0.2)])
    t.update(conf, label)
    assert torch.allclose(t.thresholds(), torch.tensor([0.9, 0.7, 0.5]))


def test_ema_update_moves_teacher_towards_student():
    student, teacher = torch.nn.BatchNorm2d(2), torch.nn.BatchNorm2d(2)
    with torch.no_grad():
        student.weight.fill_(1.0)
        teacher.weight.fill_(0.0)
    student.num_batches_tracked.fill_(7)
    st.ema_update(teacher, student, 0.9)
    assert torch.allclose(teacher.weight, torch.full((2,), 0.1))
    assert int(teacher.num_batches_tracked) == 7


@pytest.mark.parametrize("size", [(400, 300), (1382, 512), (200, 100)])
def test_random_crop_gives_the_crop_size_and_keeps_maps_aligned(size):
    rng = np.random.default_rng(0)
    w, h = size
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = 200
    label = np.zeros((h, w), np.uint8)
    label[:, : w // 2] = 5
    for width in (384, 512, 640):
        out, (lab,) = random_crop(img, [label], (width, 288), (0.8, 1.35), rng)
        assert out.shape == (288, width, 3) and lab.shape == (288, width)
        valid = lab != IGNORE
        assert ((out[..., 0][valid] > 100) == (lab[valid] == 5)).mean() > 0.98


def test_crop_widths_follow_the_model_height():
    rng = np.random.default_rng(0)
    assert {crop_width(rng) for _ in range(200)} == {384, 448, 512, 640}
    assert {crop_width(rng, 224) for _ in range(200)} == {288, 352, 384, 512}
    assert all(crop_width(rng, 224) % 32 == 0 for _ in range(50))
    assert st.model_size(288) == (384, 288) and st.model_size(224) == (288, 224)


def test_strong_photometric_and_weathers_keep_shape_and_range():
    rng = np.random.default_rng(1)
    img = np.random.default_rng(2).integers(0, 255, (288, 384, 3), dtype=np.uint8)
    for _ in range(10):
        out = strong_photometric(img, rng, weather_p=1.0)
        assert out.shape == img.shape and out.dtype == np.uint8
    for weather in WEATHERS:
        assert weather(img.astype(np.float32), rng).shape == img.shape


def test_student_view_switches_for_the_augmentation_ablations():
    """--target-jitter gentle gives the supervised jitter (colour changes far smaller than the strong jitter with
    weather); the labelled crops' weather share is the recipe's 0.5 by default and 0 with --weather-p 0."""
    img = np.full((64, 96, 3), 128, np.uint8)
    args = st.build_parser().parse_args(["--target-jitter", "gentle", "--weather-p", "0"])
    rng = np.random.default_rng(0)
    gentle = [st.student_view(img, args, rng) for _ in range(20)]
    assert all(abs(float(v.mean()) - 128) < 40 for v in gentle)
    args_strong = st.build_parser().parse_args(["--weather-p", "1"])
    strong = [st.student_view(img, args_strong, rng) for _ in range(20)]
    assert max(abs(float(v.mean()) - 128) for v in strong) > max(abs(float(v.mean()) - 128) for v in gentle)
    assert st.source_weather_p(st.build_parser().parse_args([])) == 0.5
    assert st.source_weather_p(args) == 0.0


def test_class_mix_pastes_half_of_the_source_classes():
    rng = np.random.default_rng(0)
    tgt_img, tgt_lab = np.zeros((4, 4, 3), np.uint8), np.full((4, 4), IGNORE, np.uint8)
    src_img = np.full((4, 4, 3), 9, np.uint8)
    src_lab = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [IGNORE] * 4], np.uint8)
    img, lab = class_mix(tgt_img, tgt_lab, src_img, src_lab, rng)
    pasted = set(np.unique(lab)) - {IGNORE}
    assert len(pasted) == 2 and pasted <= {1, 2, 3, 4}
    assert ((img[..., 0] == 9) == np.isin(lab, list(pasted))).all()
    assert (lab[3] == IGNORE).all()


def test_self_train_runs_resumes_and_writes_weights(tmp_path, data_dir, unlabelled_dir):
    out = tmp_path / "run"
    argv = ["--unlabelled", str(unlabelled_dir), "--data", str(data_dir), "--out", str(out), "--limit-images", "6",
            "--batch", "2",
            "--eval-every", "2", "--checkpoint-every", "2", "--threads", "2",
            "--init", str(models_dir() / "carla_unet.safetensors"),
            "--box-projection-weight", "0.1", "--car-negative-weight", "1.0"]      # the box terms run too
    assert st.main(argv + ["--steps", "2"]) == 0
    assert st.main(argv + ["--steps", "4", "--resume"]) == 0
    with open(out / "log.csv") as f:
        steps = [int(float(r["step"])) for r in csv.DictReader(f)]
    assert steps == [0, 2, 4] or steps == [0, 2, 2, 4]   # resumed after step 2, not from scratch
    final = json.loads((out / "final.json").read_text())
    assert set(final) >= {"student", "teacher", "class_thresholds"}
    from carla_seg_ros.networks.weights import load_model
    model, meta = load_model(out / "teacher.safetensors")
    assert meta["run_info"]["recipe"] == "self-train"
    x = torch.zeros(1, 3, 288, 512)
    assert model(x).shape == (1, classes.num_classes(), 288, 512)


def test_distillation_loss_is_zero_at_the_teacher_and_pulls_the_student_towards_it():
    teacher = torch.randn(2, classes.num_classes(), 4, 5)
    assert dist.distillation_loss(teacher, teacher).item() == pytest.approx(0.0, abs=1e-6)
    student = torch.zeros_like(teacher, requires_grad=True)
    loss = dist.distillation_loss(student, teacher)
    loss.backward()                               # must carry a gradient to the student
    assert loss.item() > 0 and student.grad.abs().sum() > 0
    with torch.no_grad():
        stepped = student - 10.0 * student.grad
    assert dist.distillation_loss(stepped, teacher) < loss


def test_distillation_gives_the_student_a_new_decoder_and_the_init_encoder():
    from carla_seg_ros.networks.weights import load_model
    init, meta = load_model(models_dir() / "carla_unet_fast.safetensors")
    assert dist.student_config(meta["model_config"], None, None) == meta["model_config"]     # no options: no distillation
    config = dist.student_config(meta["model_config"], (64, 48, 24, 16), "separable")
    assert config == dict(meta["model_config"], decoder=[64, 48, 24, 16], decoder_block="separable")
    student = dist.distilled_student(init, config)
    for key, value in init.encoder.state_dict().items():
        assert torch.equal(student.encoder.state_dict()[key], value)
    depthwise = [m for m in student.decoder.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert len(depthwise) == 4 and student.head.in_channels == 16
    with pytest.raises(ValueError, match="efficientnet_lite_unet"):
        dist.student_config({"arch": "fast_unet"}, None, "separable")


def test_distillation_run_saves_a_loadable_student_of_the_new_decoder(tmp_path, data_dir, unlabelled_dir):
    out = tmp_path / "run"
    assert st.main(["--unlabelled", str(unlabelled_dir), "--data", str(data_dir), "--out", str(out),
                    "--limit-images", "4", "--batch", "2", "--steps", "2", "--eval-every", "2", "--threads", "2",
                    "--height", "256", "--init", str(models_dir() / "carla_unet_fast.safetensors"),
                    "--decoder-block", "separable", "--ema", "0.9"]) == 0
    from carla_seg_ros.networks.weights import load_model
    for name in ("student", "teacher"):
        model, meta = load_model(out / f"{name}.safetensors")
        assert meta["model_config"]["decoder_block"] == "separable"
        assert model(torch.zeros(1, 3, 256, 352)).shape == (1, classes.num_classes(), 256, 352)


def test_hints_compare_every_decoder_level_and_a_same_width_student_starts_with_the_init_head():
    from carla_seg_ros.networks.weights import load_model
    init, meta = load_model(models_dir() / "carla_unet_fast.safetensors")
    student = dist.distilled_student(init, dist.student_config(meta["model_config"], None, "separable"))
    assert dist.same_widths(student, init) and torch.equal(student.head.weight, init.head.weight)
    student_levels, init_levels = dist.LevelOutputs(student), dist.LevelOutputs(init)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        init(x)
        init(x)                                     # a second forward replaces the first one's outputs
    assert len(init_levels.outputs) == 4
    assert dist.hint_loss(init_levels, init_levels).item() == 0.0
    student(x)
    loss = dist.hint_loss(student_levels, init_levels)
    loss.backward()
    assert loss.item() > 0 and student.decoder.levels[0][0][0][0].weight.grad.abs().sum() > 0
    narrow = dist.distilled_student(init, dist.student_config(meta["model_config"], (64, 48, 24, 16), "separable"))
    assert not dist.same_widths(narrow, init)       # other widths: no hints, a fresh head


@pytest.mark.parametrize("bad", [["--height", "100"], ["--decoder", "64,x"], ["--decoder", "0,8"],
                                 ["--distil-weight", "-1"], ["--hint-weight", "-0.5"], ["--car-negative-weight", "-1"], ["--ema", "1.5"],
                                 ["--steps", "0"], ["--classmix", "2"],
                                 ["--threshold-min", "0.95"], ["--train-splits", "train,test"],
                                 ["--weather-p", "1.5"], ["--target-jitter", "none"]])
def test_bad_options_are_refused_with_a_message(bad, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        st.main(["--unlabelled", str(tmp_path), "--out", str(tmp_path / "run")] + bad)
    assert exc.value.code == 2 and "error:" in capsys.readouterr().err


def test_a_missing_unlabelled_folder_is_one_clear_error(tmp_path, data_dir, capsys):
    assert st.main(["--unlabelled", str(tmp_path / "missing"), "--data", str(data_dir), "--out", str(tmp_path / "r"),
                    "--limit-images", "2"]) == 2
    assert "has no rgb/ folder" in capsys.readouterr().err
