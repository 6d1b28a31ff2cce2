"""HIH's decimal heatmap read as a distribution (``decimal_decode="expectation"``, issue 28).

The fraction is the softmax-weighted mean of the cell centres of the decoded window. It must
round trip the codec's own targets exactly (within a cell on the map's outermost pixels,
where the label is cut), equal a hand
computation where the mass is split between cells, reach positions the argmax decode cannot
(a pixel border), keep x and y apart, and be what the composed `hih_local` config decodes with,
while the published head keeps the argmax.
"""

from __future__ import annotations

import pytest
import torch

from hih_lightning.codecs import HIHCodec
from hih_lightning.models.output import NetOutput
from test_hih_window import _heatmap_peaks, _points

H = 16


@pytest.mark.parametrize(("k", "r"), [(4, 1), (8, 1), (4, 2)])
def test_expectation_roundtrip_is_the_cell_centre_and_within_a_cell_at_the_border(
        k: int, r: int) -> None:
    codec = HIHCodec(heatmap_size=H, decimal_size=k, window=r, soft_label="gaussian",
                     decimal_decode="expectation")
    argmax = HIHCodec(heatmap_size=H, decimal_size=k, window=r)
    # off the map's outermost pixels the Gaussian label is whole: exactly the cell centre
    inner = _points(2, 30, seed=4, lo=1.0, hi=H - 1.0)
    centre = argmax.decode(argmax.ideal_output(inner)).landmarks
    assert torch.allclose(codec.decode(codec.ideal_output(inner)).landmarks, centre, atol=1e-4)
    assert (centre - inner).abs().max() <= 1 / (2 * k) + 1e-5
    # on them the cells off the map are cut: pulled inward, by less than a cell
    edge = torch.tensor([[[0.02, 15.99], [15.9, 0.1], [0.5, 0.97]]])
    got = codec.decode(codec.ideal_output(edge)).landmarks
    assert (got - edge).abs().max() < 1 / k
    assert got[0, 0, 0] > edge[0, 0, 0] and got[0, 0, 1] < edge[0, 0, 1]


def _one_landmark(codec: HIHCodec, pixel: tuple[int, int], logits: torch.Tensor) -> torch.Tensor:
    """Decode one landmark whose integer argmax is ``pixel`` and whose decoded K x K window
    holds ``logits`` (given as the (1, 1, K, K) tensor the decode reads)."""
    heatmaps = _heatmap_peaks(torch.tensor([[pixel]]))
    return codec.decode(NetOutput(heatmaps=heatmaps, decimals=logits)).landmarks[0, 0]


def test_split_mass_decodes_to_the_hand_computed_mean_and_x_stays_x() -> None:
    k, r = 4, 1
    expect = HIHCodec(heatmap_size=H, decimal_size=k, window=r, decimal_decode="expectation")
    logits = torch.full((1, 1, 3 * k, 3 * k), -1e4)
    # the argmax pixel's row (y) 1, columns (x) 1 and 2, equal mass
    logits[0, 0, k + 1, k + 1] = logits[0, 0, k + 1, k + 2] = 5.0
    got = _one_landmark(expect, (6, 9), logits)
    assert torch.allclose(got, torch.tensor([6 + (1.5 + 2.5) / 2 / k, 9 + 1.5 / k]))
    # three to one between the columns: x = 6 + (3 * 1.5 + 2.5) / 4 / k
    logits[0, 0, k + 1, k + 1] = 5.0 + torch.log(torch.tensor(3.0))
    got = _one_landmark(expect, (6, 9), logits)
    assert torch.allclose(got, torch.tensor([6 + (3 * 1.5 + 2.5) / 4 / k, 9 + 1.5 / k]))
    argmax = HIHCodec(heatmap_size=H, decimal_size=k, window=r)
    assert torch.allclose(_one_landmark(argmax, (6, 9), logits),
                          torch.tensor([6 + 1.5 / k, 9 + 1.5 / k]))


def test_mass_across_a_pixel_border_decodes_onto_the_border() -> None:
    k, r = 4, 1
    codec = HIHCodec(heatmap_size=H, decimal_size=k, window=r, decimal_decode="expectation")
    big = (2 * r + 1) * k
    logits = torch.full((1, 1, big, big), -1e4)
    # the last cell of the left neighbour and the first cell of the argmax pixel, row k + 2
    logits[0, 0, k + 2, k - 1] = logits[0, 0, k + 2, k] = 3.0
    got = _one_landmark(codec, (7, 5), logits)
    assert torch.allclose(got, torch.tensor([7.0, 5 + 2.5 / k]))   # x on the border of 6|7


def test_expectation_is_refused_without_a_window_and_named_when_unknown() -> None:
    with pytest.raises(ValueError, match="published_compat"):
        HIHCodec(published_compat=True, decimal_decode="expectation")
    with pytest.raises(ValueError, match="window >= 1"):
        HIHCodec(window=0, decimal_decode="expectation")
    with pytest.raises(ValueError, match="decimal_decode"):
        HIHCodec(decimal_decode="mean")


def test_hih_local_decodes_the_expectation_and_the_published_head_the_argmax(compose_cfg
                                                                             ) -> None:
    from hydra.utils import instantiate

    local = instantiate(compose_cfg("model/codec=hih_local").model.codec)
    published = instantiate(compose_cfg("model/codec=hih").model.codec)
    assert (local.decimal_decode, local.window) == ("expectation", 1)
    assert published.decimal_decode == "argmax"
