"""Dataset facts against HIH_SPEC: mirror maps (section 8), normalisation pairs (6)."""

from __future__ import annotations

import pytest

from hih_lightning.data.metainfo import METAINFO, get_meta


@pytest.mark.parametrize("name", sorted(METAINFO))
def test_flip_maps_are_involutions(name):
    flip = get_meta(name).flip_map
    assert sorted(flip) == list(range(len(flip)))
    assert [flip[flip[i]] for i in range(len(flip))] == list(range(len(flip)))


# HIH_SPEC section 8, copied as written there ("a..b" is a run, reversed when a > b).
SPEC_FLIP_MAPS = {
    "wflw": "32..0, 46,45,44,43,42,50,49,48,47, 37,36,35,34,33,41,40,39,38, "
            "51,52,53,54, 59,58,57,56,55, 72,71,70,69,68,75,74,73, 64,63,62,61,60,67,66,65, "
            "82,81,80,79,78,77,76, 87,86,85,84,83, 92,91,90,89,88, 95,94,93, 97,96",
    "300w": "16..0, 26..17, 27,28,29,30, 35,34,33,32,31, 45,44,43,42,47,46, "
            "39,38,37,36,41,40, 54..48, 59..55, 64..60, 67,66,65",
    "cofw": "1,0,3,2,6,7,4,5,9,8,11,10,14,15,12,13,17,16,19,18,20,21,23,22,24,25,26,27,28",
}
# HIH_SPEC section 6: inter-ocular (outer eye corners) and inter-pupil pairs.
SPEC_NORMALISATION = {"wflw": ((60, 72), (96, 97)), "300w": ((36, 45), None),
                      "cofw": ((8, 9), (16, 17))}
SPEC_LANDMARKS = {"wflw": 98, "300w": 68, "cofw": 29}


def _expand(spec: str) -> list[int]:
    out: list[int] = []
    for item in spec.split(","):
        if ".." in item:
            a, b = (int(v) for v in item.split(".."))
            out += list(range(a, b - 1, -1) if a > b else range(a, b + 1))
        else:
            out.append(int(item))
    return out


@pytest.mark.parametrize("name", sorted(SPEC_FLIP_MAPS))
def test_flip_maps_equal_the_spec(name):
    expected = _expand(SPEC_FLIP_MAPS[name])
    assert len(expected) == SPEC_LANDMARKS[name]
    meta = get_meta(name)
    assert meta.num_landmarks == SPEC_LANDMARKS[name]
    assert list(meta.flip_map) == expected


@pytest.mark.parametrize("name", sorted(SPEC_NORMALISATION))
def test_normalisation_pairs_equal_the_spec(name):
    inter_ocular, inter_pupil = SPEC_NORMALISATION[name]
    meta = get_meta(name)
    assert meta.inter_ocular == inter_ocular
    assert meta.inter_pupil == inter_pupil
    # a mirror swaps the two ends of each pair
    for a, b in filter(None, (inter_ocular, inter_pupil)):
        assert (meta.flip_map[a], meta.flip_map[b]) == (b, a)


def test_synthetic_faces_use_the_wflw_layout():
    synthetic = get_meta("synthetic")
    assert list(synthetic.flip_map) == _expand(SPEC_FLIP_MAPS["wflw"])
    assert (synthetic.inter_ocular, synthetic.inter_pupil) == SPEC_NORMALISATION["wflw"]


def test_self_symmetric_points_stay():
    assert [get_meta("wflw").flip_map[i] for i in (16, 51, 52, 53, 54, 57)] == \
        [16, 51, 52, 53, 54, 57]
    assert [get_meta("300w").flip_map[i] for i in (8, 27, 30, 33, 51, 57, 62, 66)] == \
        [8, 27, 30, 33, 51, 57, 62, 66]


def test_unknown_dataset_names_the_known_ones():
    with pytest.raises(KeyError, match="wflw"):
        get_meta("lfpw")
