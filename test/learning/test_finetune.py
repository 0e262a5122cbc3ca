"""Fine-tuning data: recorded (flat) folders split in contiguous time blocks with guard bands, folders of different
codings mixed and remapped to the model's class set, and `train --init` starting from a trained model."""
import csv
import json
import os

import numpy as np
import pytest

from carla_seg_ros import classes
from carla_seg_ros.classes import IGNORE_INDEX
from carla_seg_ros.datasets import NO_HOOD, find_pairs, read_tag_ids, time_block_split, time_order
from carla_seg_ros.learning import network_setup, train, training_data
from carla_seg_ros.networks.weights import load_model, read_metadata
from carla_seg_ros.paths import models_dir


def recorded_folder(root, sources, stamps=None):
    """A folder laid out as `carla-seg record` writes it (rgb/ label/ manifest.csv), linking existing pairs."""
    (root / "rgb").mkdir(parents=True)
    (root / "label").mkdir()
    rows = []
    for k, (name, pair) in enumerate(sources):
        os.symlink(pair.rgb, root / "rgb" / f"{name}.png")
        os.symlink(pair.label, root / "label" / f"{name}.png")
        rows.append({"name": name, "stamp_ns": (stamps or {}).get(name, 1000 + k), "coding": pair.coding})
    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["name", "stamp_ns", "coding"])
        w.writeheader()
        w.writerows(rows)
    return root


def test_time_block_split_keeps_blocks_contiguous_with_guard_bands():
    frames = list(range(500))
    split = time_block_split(frames, val_fraction=0.1, guard=10, blocks=1)
    assert split.val == list(range(450, 500))                  # the last block ends the recording
    assert split.guard == list(range(440, 450))
    assert split.train == list(range(440))
    two = time_block_split(frames, 0.1, 10, blocks=2)
    assert two.val == list(range(225, 250)) + list(range(475, 500))
    assert two.guard == list(range(215, 225)) + list(range(250, 260)) + list(range(465, 475))
    assert set(two.train) | set(two.val) | set(two.guard) == set(frames)
    small = time_block_split(list(range(4)), 0.1, 10, 1)      # a short recording: the guard shrinks
    assert small.val == [3] and small.train == [0, 1, 2] and small.guard == []


def test_recorded_folder_is_ordered_by_manifest_stamps_and_split_in_time(tmp_path, data_dir):
    pairs = find_pairs(data_dir, "train")[:30]
    # names in reverse time order: the manifest's stamps, not the names, give the order
    names = [f"rec_{29 - k:02d}" for k in range(30)]
    folder = recorded_folder(tmp_path / "rec", list(zip(names, pairs)),
                             stamps={n: 10**9 * (k + 1) for k, n in enumerate(names)})
    ordered, how = time_order(folder, find_pairs(folder, "all"))
    assert [p.name for p in ordered] == names and "stamp" in how
    out = tmp_path / "run"
    assert train.main(["--preset", "fast_unet", "--data", str(folder), "--out", str(out), "--batch-size", "4",
                       "--crop", "64x48", "--input-size", "64x48", "--epochs", "1", "--max-steps", "1",
                       "--threads", "2", "--guard-frames", "2"]) == 0
    record = json.loads((out / "split.json").read_text())["folders"][0]
    assert record["val"] == names[-3:] and record["guard"] == names[-5:-3] and record["train"] == names[:-5]
    assert record["order"].startswith("manifest stamp_ns")


def test_mixed_codings_are_remapped_to_the_class_set(modern_dir, data_dir):
    t13 = find_pairs(data_dir, "val")[0]
    t29 = next(p for p in find_pairs(modern_dir, "all") if p.coding == "tags29")
    t23 = next(p for p in find_pairs(modern_dir, "all") if p.coding == "tags23")
    tags29 = read_tag_ids(t29.label)
    assert (tags29 == 11).any()                                           # the frame shows sky
    images, labels = training_data.load_pairs([t13, t23, t29], (400, 300), NO_HOOD, "carla18")
    assert labels.shape == (3, 300, 400)
    sky, unlabeled, tl = (classes.class_names("carla18").index(n) for n in ("Sky", "Unlabeled", "TrafficLight"))
    np.testing.assert_array_equal(labels[2] == sky, tags29 == 11)         # 0.9.14+ sky is Sky ...
    np.testing.assert_array_equal(labels[2] == tl, tags29 == 7)           # ... and lights are not signs
    assert not (labels[0] == sky).any() and not (labels[0] == unlabeled).any()
    assert ((labels[0] == IGNORE_INDEX) == (read_tag_ids(t13.label) == 0) | (read_tag_ids(t13.label) == 12)).all()
    _, lyft = training_data.load_pairs([t29], (400, 300), NO_HOOD, "lyft13")     # lyft13: sky stays Unlabeled
    assert (lyft[0][tags29 == 11] == 0).all() and (lyft[0][tags29 == 7] == 12).all()
    assert set(np.unique(labels)) <= set(range(18)) | {IGNORE_INDEX}


def test_init_fine_tunes_the_trained_model_without_imagenet(tmp_path, data_dir, modern_dir, capsys):
    init = models_dir() / "carla_unet.safetensors"
    sources = [(p.name, p) for p in find_pairs(data_dir, "train")[:4]]
    sources += [(p.name, p) for p in find_pairs(modern_dir, "all") if p.coding != "tags13"][:2]
    folder = recorded_folder(tmp_path / "rec", sources)
    out = tmp_path / "ft"
    assert train.main(["--init", str(init), "--data", str(folder), "--out", str(out), "--batch-size", "2",
                       "--max-steps", "1", "--threads", "2", "--bf16", "off"]) == 0
    printed = capsys.readouterr().out
    assert "no ImageNet weights loaded" in printed and "ImageNet weights of" not in printed
    assert "BatchNorm frozen" in printed and "tags13+tags23" in printed       # one folder, mixed codings
    run = read_metadata(out / "final.safetensors")["run_info"]
    assert run["args"]["preset"] == "finetune" and run["args"]["lr"] == "0.0003"
    assert run["class_set"] == "lyft13" and run["input_size"] == [384, 288]
    model, meta = load_model(out / "final.safetensors")
    ref, _ = load_model(init)
    assert meta["model_config"] == read_metadata(init)["model_config"]
    # one step at a low rate: the weights moved, but only a little; BatchNorm statistics are kept
    w, w0 = model.head.weight.detach(), ref.head.weight.detach()
    assert not np.allclose(w, w0) and float((w - w0).abs().max()) < 0.01
    bn = next(n for n, _ in model.named_buffers() if n.endswith("running_mean"))
    np.testing.assert_array_equal(model.get_buffer(bn), ref.get_buffer(bn))
    assert train.resolve_args(["--init", str(init), "--data", str(folder)]).class_set == "lyft13"
    with pytest.raises(SystemExit):
        train.resolve_args(["--preset", "finetune", "--data", str(folder)])


def test_init_with_another_class_set_gets_a_head_that_starts_from_the_old_classes(data_dir):
    from carla_seg_ros.paths import models_dir
    init = models_dir() / "carla_unet.safetensors"
    args = train.resolve_args(["--init", str(init), "--classes", "carla18", "--data", str(data_dir)])
    assert (args.class_set, args.init_class_set) == ("carla18", "lyft13")
    old, _ = load_model(init)
    model, config = network_setup.build_network(args)
    assert config["num_classes"] == 18 and model.head.out_channels == 18
    lyft, c18 = classes.class_names("lyft13"), classes.class_names("carla18")
    parents = network_setup.parent_classes("lyft13", "carla18")
    expected = {"Sky": "Unlabeled", "Terrain": "Vegetation", "TrafficLight": "TrafficSign", "LargeVehicle": "Car",
                "TwoWheeler": "Car", "Road": "Road", "Pedestrian": "Pedestrian"}
    for name, parent in expected.items():
        assert lyft[parents[c18.index(name)]] == parent, name
        np.testing.assert_array_equal(model.head.weight[c18.index(name)].detach(),
                                      old.head.weight[lyft.index(parent)].detach())
