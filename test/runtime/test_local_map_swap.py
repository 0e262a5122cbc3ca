"""The local map across a live model swap (ros/model_swap.py): another class table rebuilds the evidence tables
for the same layers, exactly as a fresh map of that class table would have them; what the layers hold is kept."""
from __future__ import annotations

import numpy as np
import pytest

from carla_seg_ros import classes
from carla_seg_ros.runtime.local_map import LocalMap, MapSpec
from carla_seg_ros.runtime.occupancy_grid import load_occupancy_config


def test_tables_for_another_class_set_equal_a_fresh_maps():
    lyft = load_occupancy_config(None, classes.class_names("lyft13"))
    c18 = load_occupancy_config(None, classes.class_names("carla18"))
    running = LocalMap(MapSpec(0.5, 10.0), lyft)
    running.layers[:] = 1.5                                   # evidence gathered before the swap
    fresh = LocalMap(MapSpec(0.5, 10.0), c18)
    tables = running.tables_for(c18)
    assert not np.array_equal(tables[0], running._table)      # the class ids mean other things now
    running.use_tables(tables)
    for mine, theirs in zip((running._table, running._low, running._high), (fresh._table, fresh._low, fresh._high)):
        np.testing.assert_array_equal(mine, theirs)
    assert (running.layers == 1.5).all() and running.names == fresh.names


def test_other_layers_are_refused():
    lyft = load_occupancy_config(None, classes.class_names("lyft13"))
    running = LocalMap(MapSpec(0.5, 10.0), lyft)
    fewer = type(lyft)(**{**lyft.__dict__, "groups": dict(list(lyft.groups.items())[:1])})
    with pytest.raises(ValueError, match="groups"):
        running.tables_for(fewer)
