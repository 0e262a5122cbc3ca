"""Class sets from a model's metadata: tag maps, occupancy groups by class name and report colours, for a model of
either class set, and the 13 classes for files exported before class sets."""
import json

import numpy as np
import pytest

from carla_seg_ros import classes
from carla_seg_ros.runtime.model_info import ModelInfo
from carla_seg_ros.runtime.occupancy_grid import load_occupancy_config


def _info(class_set, **extra):
    return ModelInfo(input_width=384, input_height=288, classes=classes.class_table(class_set), mean=[0, 0, 0],
                     std=[1, 1, 1], class_set=class_set, **extra)


def test_metadata_without_class_set_means_the_13_classes():
    old = json.loads(_info("lyft13").to_json())
    for key in ("class_set", "tag_maps"):
        old.pop(key)
    info = ModelInfo.from_json(json.dumps(old))
    assert info.class_set == "lyft13" and info.tag_maps == {}
    for coding in classes.CODINGS:
        np.testing.assert_array_equal(info.tag_lut(coding), classes.load_coding(coding).to_model)


def test_tag_maps_in_the_metadata_win_over_the_config():
    info = _info("carla18", tag_maps={"tags29": {"11": 4}})
    assert info.tag_lut("tags29")[11] == 4 and info.tag_lut("tags29")[1] == 255
    assert info.tag_lut("tags23")[13] == classes.class_names("carla18").index("Sky")      # from classes.yaml


@pytest.mark.parametrize("class_set", ["lyft13", "carla18"])
def test_occupancy_groups_resolve_for_either_class_set(class_set):
    names = classes.class_names(class_set)
    occ = load_occupancy_config(names=names)
    vehicles = {names[i] for i in np.flatnonzero(occ.groups["vehicles"])}
    assert vehicles == ({"Car"} if class_set == "lyft13" else {"Car", "LargeVehicle", "TwoWheeler"})
    see_through = {names[i] for i in np.flatnonzero(occ.ground & ~occ.free)}
    assert see_through == ({"Sidewalk"} if class_set == "lyft13" else {"Sidewalk", "Terrain"})


def test_an_unknown_occupancy_class_is_still_an_error(tmp_path):
    path = tmp_path / "occ.yaml"
    path.write_text("free_space: drivable\ngroups:\n  drivable: [Road, Raod]\n")
    with pytest.raises(ValueError, match="Raod"):
        load_occupancy_config(path, classes.class_names("carla18"))


def test_report_colours_follow_the_class_set():
    from carla_seg_ros.evaluation.report import colorize_ids
    names = classes.class_names("carla18")
    sky = names.index("Sky")
    assert colorize_ids(np.array([[sky]], np.uint8), names)[0, 0].tolist() == [70, 130, 180]
    assert colorize_ids(np.array([[7]], np.uint8))[0, 0].tolist() == [128, 64, 128]          # lyft13 Road
