import cv2
import numpy as np
import pytest

from carla_seg_ros import datasets
from carla_seg_ros.classes import IGNORE_INDEX


def test_prepared_layout_counts(data_dir):
    assert len(datasets.find_pairs(data_dir, "train")) == 367
    assert len(datasets.find_pairs(data_dir, "val")) == 51
    assert len(datasets.find_pairs(data_dir, "test")) == 52
    full = datasets.find_pairs(data_dir, "fullres")
    assert len(full) == 40
    img, lab = datasets.read_rgb(full[0].rgb), datasets.read_tag_ids(full[0].label)
    assert img.shape == (600, 800, 3) and img.dtype == np.uint8 and lab.shape == (600, 800)


def test_splits_are_disjoint(data_dir):
    names = {s: {p.name for p in datasets.find_pairs(data_dir, s)} for s in ("train", "val", "test")}
    assert not names["train"] & names["val"] and not names["train"] & names["test"] and not names["val"] & names["test"]


def test_labels_are_model_ids(data_dir):
    pair = datasets.find_pairs(data_dir, "val")[0]
    label = datasets.read_label(pair, datasets.NO_HOOD)
    assert label.dtype == np.uint8 and label.max() <= 12


def test_kaggle_layout(tmp_path, data_dir):
    """The Kaggle download: dataX/CameraRGB + dataX/CameraSeg, class id in the red channel of an RGB label."""
    src = datasets.find_pairs(data_dir, "test")[:3]
    for folder in ("dataA", "dataB"):
        (tmp_path / folder / "CameraRGB").mkdir(parents=True)
        (tmp_path / folder / "CameraSeg").mkdir(parents=True)
        for p in src:
            rgb = datasets.read_rgb(p.rgb)
            ids = datasets.read_tag_ids(p.label)
            cv2.imwrite(str(tmp_path / folder / "CameraRGB" / f"{p.name}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            label_rgb = np.zeros(ids.shape + (3,), np.uint8)
            label_rgb[..., 2] = ids          # BGR order on disk: red channel holds the id
            label_rgb[..., 1] = 7            # junk in other channels must be ignored
            cv2.imwrite(str(tmp_path / folder / "CameraSeg" / f"{p.name}.png"), label_rgb)
    every = datasets.find_pairs(tmp_path, "all")
    assert len(every) == 6 and len({p.name for p in every}) == 6
    only_a = datasets.find_pairs(tmp_path, "dataA")
    assert len(only_a) == 3
    np.testing.assert_array_equal(datasets.read_tag_ids(only_a[0].label), datasets.read_tag_ids(src[0].label))


def test_modern_layout_codings(modern_dir):
    pairs = datasets.find_pairs(modern_dir, "all")
    assert {p.coding for p in pairs} == {"tags23", "tags29"}
    t29 = next(p for p in pairs if p.coding == "tags29")
    label = datasets.read_label(t29, datasets.HoodRule())
    assert label.max() <= 12 or (label == IGNORE_INDEX).any()


def test_missing_data_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        datasets.find_pairs(tmp_path / "nope", "test")
    with pytest.raises(FileNotFoundError, match="no image/label pairs"):
        datasets.find_pairs(tmp_path, "test")


def test_hood_rule():
    label = np.full((10, 4), 10, np.uint8)
    label[:, 0] = 7
    bg = datasets.HoodRule("background", 0.8).apply(label)
    assert (bg[8:, 1:] == 0).all() and (bg[:8, 1:] == 10).all() and (bg[:, 0] == 7).all()
    ign = datasets.HoodRule("ignore", 0.8).apply(label)
    assert (ign[8:, 1:] == IGNORE_INDEX).all() and (ign[8:, 0] == 7).all()
    assert (datasets.NO_HOOD.apply(label) == label).all()
    assert (label[8:, 1:] == 10).all(), "apply must not modify its input"
    with pytest.raises(ValueError):
        datasets.HoodRule("paint")
    with pytest.raises(ValueError):
        datasets.HoodRule("ignore", 1.5)


def test_hood_rule_skips_modern_codings():
    assert datasets.hood_for("tags29", datasets.HoodRule()) is datasets.NO_HOOD
    assert datasets.hood_for("tags13", datasets.HoodRule("ignore")).mode == "ignore"
