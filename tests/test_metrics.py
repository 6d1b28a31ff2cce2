"""Metrics against a plain numpy computation, edge cases, subsets and DDP-style merging."""

from __future__ import annotations

import csv
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from hih_lightning.data.metainfo import COFW, W300, WFLW
from hih_lightning.metrics import (
    AUC,
    NME,
    CumulativeErrorCurve,
    FailureRate,
    LandmarkMetrics,
    auc_from_errors,
    ced_curve,
    per_image_nme,
)

W300_VALID = Path("300w") / "hrnet_csv" / "face_landmarks_300w_valid.csv"


# -- numpy reference --------------------------------------------------------------------------
def np_nme(preds, target, pair=None, box=False, mask=None):
    preds, target = np.asarray(preds, np.float64), np.asarray(target, np.float64)
    if box:
        w = target[..., 0].max(1) - target[..., 0].min(1)
        h = target[..., 1].max(1) - target[..., 1].min(1)
        norm = np.sqrt(w * h)
    else:
        norm = np.linalg.norm(target[:, pair[0]] - target[:, pair[1]], axis=-1)
    dist = np.linalg.norm(preds - target, axis=-1)
    if mask is None:
        return dist.mean(1) / norm
    return (dist * mask).sum(1) / mask.sum(1) / norm


def np_fr(errors, thr=0.1):
    return float(np.mean(errors > thr))


def np_auc_grid(errors, thr=0.1, steps=200_001):
    """The usual sampled-CED integral, on a very fine grid (trapezoid)."""
    x = np.linspace(0, thr, steps)
    ced = (errors[None, :] <= x[:, None]).mean(1)
    return float(np.sum((ced[1:] + ced[:-1]) / 2 * np.diff(x)) / thr)


def random_faces(rng, batch, n=68, noise=3.0):
    """Random landmarks and predictions; per-image noise spans 0.1x-6x ``noise`` px."""
    target = rng.uniform(50, 250, size=(batch, n, 2))
    scale = noise * rng.uniform(0.1, 6.0, size=(batch, 1, 1))
    preds = target + rng.normal(0, 1, size=target.shape) * scale
    return torch.from_numpy(preds), torch.from_numpy(target)


# -- single metrics ---------------------------------------------------------------------------
@pytest.mark.parametrize("norm", ["pair", "box"])
def test_metrics_match_numpy_over_several_batches(norm):
    rng = np.random.default_rng(0)
    pair = (36, 45)
    kwargs = {"norm": norm}
    metrics = [NME(pair, **kwargs), FailureRate(pair, **kwargs), AUC(pair, **kwargs)]
    all_p, all_t = [], []
    for batch in (7, 16, 1, 9):
        preds, target = random_faces(rng, batch, noise=5)
        all_p.append(preds.numpy())
        all_t.append(target.numpy())
        for m in metrics:
            m.update(preds, target)
    preds, target = np.concatenate(all_p), np.concatenate(all_t)
    e = np_nme(preds, target, pair, box=norm == "box")
    nme, fr, auc = (float(m.compute()) for m in metrics)
    assert nme == pytest.approx(e.mean(), abs=1e-6)
    assert fr == pytest.approx(np_fr(e), abs=1e-6)
    assert auc == pytest.approx(np.mean(np.maximum(0, 0.1 - e)) / 0.1, abs=1e-6)
    assert 0 < fr < 1  # the data exercises both sides of the threshold


def test_hand_example_two_images():
    # image 0: eyes 10 px apart, every landmark 1 px off -> 0.1 ; image 1: eyes 20 px apart,
    # landmark 0 is 4 px off, landmark 1 exact, landmark 2 is 2 px off -> (6/3)/20 = 0.1 ...
    target = torch.tensor([[[0.0, 0.0], [10.0, 0.0], [5.0, 5.0]],
                           [[0.0, 0.0], [20.0, 0.0], [10.0, 10.0]]], dtype=torch.float64)
    preds = target.clone()
    preds[0, :, 1] += 1.0
    preds[1, 0] += torch.tensor([0.0, 3.0])  # 3 px
    preds[1, 2] += torch.tensor([0.0, 1.5])  # 1.5 px -> mean 1.5 / 20 = 0.075
    errors = per_image_nme(preds, target, (0, 1))
    assert errors.tolist() == pytest.approx([0.1, 0.075])
    nme = NME((0, 1))
    nme.update(preds, target)
    assert float(nme.compute()) == pytest.approx(0.0875)
    fr = FailureRate((0, 1), threshold=0.08)
    fr.update(preds, target)
    assert float(fr.compute()) == pytest.approx(0.5)
    auc = AUC((0, 1), threshold=0.2)
    auc.update(preds, target)
    assert float(auc.compute()) == pytest.approx(((0.2 - 0.1) + (0.2 - 0.075)) / 2 / 0.2)


def test_box_norm_and_mask():
    target = torch.tensor([[[0.0, 0.0], [40.0, 10.0], [20.0, 5.0]]], dtype=torch.float64)
    preds = target + torch.tensor([[[2.0, 0.0], [0.0, 4.0], [0.0, 100.0]]], dtype=torch.float64)
    mask = torch.tensor([[True, True, False]])
    assert float(per_image_nme(preds, target, norm="box", mask=mask)[0]) == pytest.approx(3 / 20)
    with pytest.raises(ValueError, match="no landmark"):
        per_image_nme(preds, target, (0, 1), mask=torch.zeros(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="unknown norm"):
        NME((0, 1), norm="diagonal")


def test_fr_auc_edge_cases():
    target = torch.tensor([[[0.0, 0.0], [10.0, 0.0]]] * 4, dtype=torch.float64)
    fr, auc = FailureRate((0, 1)), AUC((0, 1))
    far = target + 5.0  # error 0.707 >> 0.1
    fr.update(far, target)
    auc.update(far, target)
    assert float(fr.compute()) == 1.0
    assert float(auc.compute()) == 0.0
    fr.reset()
    auc.reset()
    fr.update(target, target)
    auc.update(target, target)
    assert float(fr.compute()) == 0.0
    assert float(auc.compute()) == 1.0
    # exactly at the threshold: not a failure, and contributes nothing to the area
    assert float(auc_from_errors(torch.tensor([0.1]), 0.1)) == 0.0
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert np.isnan(float(NME((0, 1)).compute()))


def test_exact_auc_is_the_limit_of_the_sampled_curve():
    errors = np.random.default_rng(1).gamma(2.0, 0.025, size=500)
    exact = float(auc_from_errors(torch.from_numpy(errors)))
    assert exact == pytest.approx(np_auc_grid(errors), abs=1e-5)
    thresholds, fractions = ced_curve(torch.from_numpy(errors), 0.1, 11)
    assert thresholds[-1] == pytest.approx(0.1)
    grid = np.linspace(0, 0.1, 11)
    assert fractions.tolist() == pytest.approx([(errors <= t).mean() for t in grid])
    ced = CumulativeErrorCurve((0, 1), steps=5)
    target = torch.tensor([[[0.0, 0.0], [10.0, 0.0]]], dtype=torch.float64)
    ced.update(target + 0.3, target)  # error 0.0424
    t, f = ced.compute()
    assert f.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0] and t.shape == (5,)


# -- LandmarkMetrics --------------------------------------------------------------------------
def test_landmark_metrics_keys_and_subsets_match_numpy():
    rng = np.random.default_rng(2)
    lm = LandmarkMetrics(WFLW)
    ps, ts, attrs = [], [], []
    for batch in (10, 13, 5):
        preds, target = random_faces(rng, batch, n=98, noise=3)
        flags = torch.from_numpy(rng.integers(0, 2, size=(batch, 6)))
        lm.update(preds, target, flags)
        ps.append(preds.numpy())
        ts.append(target.numpy())
        attrs.append(flags.numpy())
    preds, target, flags = np.concatenate(ps), np.concatenate(ts), np.concatenate(attrs)
    out = lm.compute()
    expected_keys = {f"{p}{m}{s}" for p in [""] + [f"{n}/" for n in WFLW.subsets]
                     for m in ("nme", "fr", "auc") for s in ("", "_ip")}
    assert set(out) == expected_keys
    for suffix, pair in (("", WFLW.inter_ocular), ("_ip", WFLW.inter_pupil)):
        e = np_nme(preds, target, pair)
        for prefix, sel in [("", slice(None))] + [(f"{n}/", flags[:, i] == 1)
                                                  for i, n in enumerate(WFLW.subsets)]:
            part = e[sel]
            assert float(out[f"{prefix}nme{suffix}"]) == pytest.approx(part.mean(), abs=1e-6)
            assert float(out[f"{prefix}fr{suffix}"]) == pytest.approx(np_fr(part), abs=1e-6)
            assert float(out[f"{prefix}auc{suffix}"]) == pytest.approx(
                np.maximum(0, 0.1 - part).mean() / 0.1, abs=1e-6)


def test_landmark_metrics_without_pupils_or_attributes():
    rng = np.random.default_rng(3)
    lm = LandmarkMetrics(W300)
    preds, target = random_faces(rng, 6)
    lm.update(preds, target)  # no attributes -> no image in any subset
    out = lm.compute()
    assert "nme_ip" not in out
    assert set(out) == {"nme", "fr", "auc", "common/nme", "common/fr", "common/auc",
                        "challenging/nme", "challenging/fr", "challenging/auc"}
    assert np.isnan(float(out["common/nme"]))
    assert float(out["nme"]) == pytest.approx(np_nme(preds, target, (36, 45)).mean(), abs=1e-9)
    plain = LandmarkMetrics(COFW, subsets=False)
    plain.update(*random_faces(rng, 3, n=29))
    assert set(plain.compute()) == {"nme", "fr", "auc", "nme_ip", "fr_ip", "auc_ip"}
    with pytest.raises(ValueError, match="attributes must be"):
        lm.update(preds, target, torch.ones(6, 3))


# -- DDP --------------------------------------------------------------------------------------
def test_merged_halves_equal_one_metric():
    rng = np.random.default_rng(4)
    preds, target = random_faces(rng, 40, n=98, noise=6)
    flags = torch.from_numpy(rng.integers(0, 2, size=(40, 6)))
    whole, first, second = LandmarkMetrics(WFLW), LandmarkMetrics(WFLW), LandmarkMetrics(WFLW)
    whole.update(preds, target, flags)
    first.update(preds[:17], target[:17], flags[:17])
    second.update(preds[17:30], target[17:30], flags[17:30])
    second.update(preds[30:], target[30:], flags[30:])
    first.merge_state(second)
    expected, merged = whole.compute(), first.compute()
    assert set(expected) == set(merged)
    for key, value in expected.items():
        assert float(merged[key]) == pytest.approx(float(value), abs=1e-12, nan_ok=True)
    for cls in (NME, FailureRate, AUC):
        a, b, c = cls((60, 72)), cls((60, 72)), cls((60, 72))
        a.update(preds, target)
        b.update(preds[:11], target[:11])
        c.update(preds[11:], target[11:])
        b.merge_state(c)
        assert float(b.compute()) == pytest.approx(float(a.compute()), abs=1e-12)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, queue) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}",
                                         rank=rank, world_size=world)
    rng = np.random.default_rng(5)
    preds, target = random_faces(rng, 21, n=98, noise=6)
    flags = torch.from_numpy(rng.integers(0, 2, size=(21, 6)))
    lm = LandmarkMetrics(WFLW)
    part = slice(0, 8) if rank == 0 else slice(8, 21)  # unequal shards on purpose
    lm.update(preds[part], target[part], flags[part])
    out = {k: float(v) for k, v in lm.compute().items()}
    torch.distributed.destroy_process_group()
    queue.put((rank, out))


@pytest.mark.slow
def test_real_two_process_gloo_equals_single_process():
    ctx = torch.multiprocessing.get_context("spawn")
    queue, port = ctx.Queue(), _free_port()
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    rng = np.random.default_rng(5)
    preds, target = random_faces(rng, 21, n=98, noise=6)
    flags = torch.from_numpy(rng.integers(0, 2, size=(21, 6)))
    single = LandmarkMetrics(WFLW)
    single.update(preds, target, flags)
    for rank in (0, 1):
        for key, value in single.compute().items():
            assert results[rank][key] == pytest.approx(float(value), abs=1e-12, nan_ok=True)


# -- real data --------------------------------------------------------------------------------
def test_real_300w_landmarks_with_perturbation(shared_data: Path):
    # the shared_data fixture skips, or fails under CI=true, when the data is missing
    with (shared_data / W300_VALID).open() as f:
        rows = list(csv.reader(f))[1:]
    target = np.array([[float(v) for v in row[4:]] for row in rows]).reshape(len(rows), 68, 2)
    assert target.shape[0] == 689
    rng = np.random.default_rng(6)
    iod = np.linalg.norm(target[:, 36] - target[:, 45], axis=-1)
    preds = target + rng.normal(0, 1, size=target.shape) * iod[:, None, None] * \
        rng.uniform(0.01, 0.12, size=(len(rows), 1, 1))
    lm = LandmarkMetrics(W300, subsets=False)
    for start in range(0, len(rows), 64):
        lm.update(torch.from_numpy(preds[start:start + 64]),
                  torch.from_numpy(target[start:start + 64]))
    out = lm.compute()
    e = np_nme(preds, target, (36, 45))
    assert float(out["nme"]) == pytest.approx(e.mean(), abs=1e-6)
    assert float(out["fr"]) == pytest.approx(np_fr(e), abs=1e-6)
    assert float(out["auc"]) == pytest.approx(np.maximum(0, 0.1 - e).mean() / 0.1, abs=1e-6)
    assert float(out["auc"]) == pytest.approx(np_auc_grid(e, steps=100_001), abs=1e-4)
