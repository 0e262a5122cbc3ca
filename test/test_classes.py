import numpy as np
import pytest

from carla_seg_ros import classes


@pytest.mark.parametrize("name,count", [("tags13", 13), ("tags23", 23), ("tags29", 29)])
def test_codings_have_unique_ids_and_colours(name, count):
    c = classes.load_coding(name)
    assert c.num_tags == count
    assert list(c.ids) == list(range(count))
    packed = {tuple(rgb) for rgb in c.colors}
    assert len(packed) == count, "palette colours must be unique or decoding is ambiguous"


@pytest.mark.parametrize("name", classes.CODINGS)
def test_palette_round_trip(name):
    c = classes.load_coding(name)
    rng = np.random.default_rng(0)
    ids = rng.choice(np.asarray(c.ids, np.uint8), size=(37, 53))
    decoded, unmatched = c.colors_to_ids(c.palette_lut()[ids])
    assert unmatched == 0
    np.testing.assert_array_equal(decoded, ids)


def test_unknown_colours_are_counted_not_guessed():
    c = classes.load_coding("tags13")
    rgb = c.palette_lut()[np.array([[7, 10]], np.uint8)]
    rgb[0, 1] = (1, 2, 3)
    ids, unmatched = c.colors_to_ids(rgb)
    assert unmatched == 1
    assert ids.tolist() == [[7, classes.IGNORE_INDEX]]


@pytest.mark.parametrize("name", classes.CODINGS)
def test_every_tag_remaps_into_the_model_classes(name):
    c = classes.load_coding(name)
    mapped = c.ids_to_model(np.asarray(c.ids, np.uint8))
    assert mapped.max() < classes.num_classes()
    assert c.ids_to_model(np.array([250], np.uint8))[0] == classes.IGNORE_INDEX


def test_known_remaps():
    t29 = classes.load_coding("tags29")
    # Roads -> Road, SideWalks -> Sidewalk, Car/Truck/Bus -> Car, RoadLine -> RoadLine, Sky -> Unlabeled
    assert t29.ids_to_model(np.array([1, 2, 14, 15, 16, 24, 11], np.uint8)).tolist() == [7, 8, 10, 10, 10, 6, 0]
    t23 = classes.load_coding("tags23")
    assert t23.ids_to_model(np.arange(13, dtype=np.uint8)).tolist() == list(range(13))
    assert t23.ids_to_model(np.array([13], np.uint8))[0] == 0  # Sky was Unlabeled in the old coding


def test_model_coding_and_colorize():
    assert classes.num_classes() == 13
    assert classes.class_names()[10] == "Car"
    table = classes.class_table()
    assert table[7] == {"id": 7, "name": "Road", "color": [128, 64, 128]}
    img = classes.colorize(np.array([[0, 7]], np.uint8))
    assert img.shape == (1, 2, 3) and img[0, 1].tolist() == [128, 64, 128]


def test_unknown_coding_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown CARLA coding"):
        classes.load_coding("tags99")


@pytest.mark.parametrize("name", classes.CODINGS)
def test_unmatched_colours_agree_with_the_decoder(name):
    """palette_mismatch (coding auto-detection) counts without the lookup table; both must agree pixel for pixel."""
    c = classes.load_coding(name)
    rng = np.random.default_rng(5)
    rgb = c.palette_lut()[rng.choice(np.asarray(c.ids, np.uint8), size=(40, 60))]
    rgb[rng.random((40, 60)) < 0.1] = (1, 2, 3)                 # off-palette pixels
    rgb[0, :5] = classes.load_coding("tags29").colors[:5]       # another coding's colours
    ids, unmatched = c.colors_to_ids(rgb)
    assert unmatched == c.unmatched_colors(rgb) == int((ids == classes.IGNORE_INDEX).sum()) > 0
