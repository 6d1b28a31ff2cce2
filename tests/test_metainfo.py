"""Dataset facts: mirror maps are involutions that swap left and right parts."""

from __future__ import annotations

import pytest

from hih_lightning.data.metainfo import METAINFO, get_meta


@pytest.mark.parametrize("name", sorted(METAINFO))
def test_flip_maps_are_involutions(name):
    flip = get_meta(name).flip_map
    assert sorted(flip) == list(range(len(flip)))
    assert [flip[flip[i]] for i in range(len(flip))] == list(range(len(flip)))


@pytest.mark.parametrize(("name", "left", "right"), [
    ("wflw", 60, 72), ("wflw", 96, 97), ("wflw", 0, 32), ("wflw", 76, 82),
    ("300w", 36, 45), ("300w", 0, 16), ("300w", 48, 54), ("cofw", 8, 9), ("cofw", 16, 17),
])
def test_flip_maps_swap_mirrored_points(name, left, right):
    flip = get_meta(name).flip_map
    assert flip[left] == right and flip[right] == left


def test_self_symmetric_points_stay():
    assert [get_meta("wflw").flip_map[i] for i in (16, 51, 52, 53, 54, 57)] == \
        [16, 51, 52, 53, 54, 57]
    assert [get_meta("300w").flip_map[i] for i in (8, 27, 30, 33, 51, 57, 62, 66)] == \
        [8, 27, 30, 33, 51, 57, 62, 66]


def test_unknown_dataset_names_the_known_ones():
    with pytest.raises(KeyError, match="wflw"):
        get_meta("lfpw")
