import cv2
import numpy as np
import pytest

from carla_seg_ros import data
from carla_seg_ros.classes import IGNORE_INDEX


def test_prepared_layout_counts(data_dir):
    assert len(data.find_pairs(data_dir, "train")) == 367
    assert len(data.find_pairs(data_dir, "val")) == 51
    assert len(data.find_pairs(data_dir, "test")) == 52
    full = data.find_pairs(data_dir, "fullres")
    assert len(full) == 40
    img, lab = data.read_rgb(full[0].rgb), data.read_tag_ids(full[0].label)
    assert img.shape == (600, 800, 3) and img.dtype == np.uint8 and lab.shape == (600, 800)


def test_splits_are_disjoint(data_dir):
    names = {s: {p.name for p in data.find_pairs(data_dir, s)} for s in ("train", "val", "test")}
    assert not names["train"] & names["val"] and not names["train"] & names["test"] and not names["val"] & names["test"]


def test_labels_are_model_ids(data_dir):
    pair = data.find_pairs(data_dir, "val")[0]
    label = data.read_label(pair, data.NO_HOOD)
    assert label.dtype == np.uint8 and label.max() <= 12


def test_kaggle_layout(tmp_path, data_dir):
    """The Kaggle download: dataX/CameraRGB + dataX/CameraSeg, class id in the red channel of an RGB label."""
    src = data.find_pairs(data_dir, "test")[:3]
    for folder in ("dataA", "dataB"):
        (tmp_path / folder / "CameraRGB").mkdir(parents=True)
        (tmp_path / folder / "CameraSeg").mkdir(parents=True)
        for p in src:
            rgb = data.read_rgb(p.rgb)
            ids = data.read_tag_ids(p.label)
            cv2.imwrite(str(tmp_path / folder / "CameraRGB" / f"{p.name}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            label_rgb = np.zeros(ids.shape + (3,), np.uint8)
            label_rgb[..., 2] = ids          # BGR order on disk: red channel holds the id
            label_rgb[..., 1] = 7            # junk in other channels must be ignored
            cv2.imwrite(str(tmp_path / folder / "CameraSeg" / f"{p.name}.png"), label_rgb)
    every = data.find_pairs(tmp_path, "all")
    assert len(every) == 6 and len({p.name for p in every}) == 6
    only_a = data.find_pairs(tmp_path, "dataA")
    assert len(only_a) == 3
    np.testing.assert_array_equal(data.read_tag_ids(only_a[0].label), data.read_tag_ids(src[0].label))


def test_modern_layout_codings(modern_dir):
    pairs = data.find_pairs(modern_dir, "all")
    assert {p.coding for p in pairs} == {"tags23", "tags29"}
    t29 = next(p for p in pairs if p.coding == "tags29")
    label = data.read_label(t29, data.HoodRule())
    assert label.max() <= 12 or (label == IGNORE_INDEX).any()


def test_missing_data_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.find_pairs(tmp_path / "nope", "test")
    with pytest.raises(FileNotFoundError, match="no image/label pairs"):
        data.find_pairs(tmp_path, "test")


def test_hood_rule():
    label = np.full((10, 4), 10, np.uint8)
    label[:, 0] = 7
    bg = data.HoodRule("background", 0.8).apply(label)
    assert (bg[8:, 1:] == 0).all() and (bg[:8, 1:] == 10).all() and (bg[:, 0] == 7).all()
    ign = data.HoodRule("ignore", 0.8).apply(label)
    assert (ign[8:, 1:] == IGNORE_INDEX).all() and (ign[8:, 0] == 7).all()
    assert (data.NO_HOOD.apply(label) == label).all()
    assert (label[8:, 1:] == 10).all(), "apply must not modify its input"
    with pytest.raises(ValueError):
        data.HoodRule("paint")
    with pytest.raises(ValueError):
        data.HoodRule("ignore", 1.5)


def test_hood_rule_skips_modern_codings():
    assert data.hood_for("tags29", data.HoodRule()) is data.NO_HOOD
    assert data.hood_for("tags13", data.HoodRule("ignore")).mode == "ignore"
