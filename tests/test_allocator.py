"""glibc malloc settings: a training step reuses freed buffers instead of faulting in pages."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from hih_lightning import allocator

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")

# The main job's real training step (hih_cpu, channels-last, Adam) at 64 px, batch 4, in a
# fresh process; prints whether the settings applied and the pages faulted per step over
# the steps after the first two.
_STEPS = textwrap.dedent("""
    import resource, sys, torch
    from omegaconf import OmegaConf
    from hih_lightning.allocator import keep_freed_memory
    from hih_lightning.config import instantiate_node
    applied = keep_freed_memory() if sys.argv[1] == "keep" else False
    torch.manual_seed(0)
    model = instantiate_node(OmegaConf.load(sys.argv[2]), "model")
    model.log_dict = lambda *args, **kwargs: None
    optimizer = model.configure_optimizers()["optimizer"]
    batch = {"image": torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8),
             "landmarks": torch.rand(4, 98, 2) * 63}
    faults = []
    for _ in range(8):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        optimizer.zero_grad(set_to_none=True)
        model.training_step(batch, 0).backward()
        optimizer.step()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(applied, sum(faults[2:]) / len(faults[2:]))
""")


def _faults_per_step(mode: str, config: Path) -> tuple[bool, float]:
    out = subprocess.run([sys.executable, "-c", _STEPS, mode, str(config)],
                         capture_output=True, text=True, check=True,
                         env={**{k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"},
                              "OMP_NUM_THREADS": "1"}).stdout.split()
    return out[0] == "True", float(out[1])


@pytest.mark.slow
@glibc
def test_a_training_step_reuses_freed_buffers_instead_of_faulting_them_in(compose_cfg,
                                                                          tmp_path):
    cfg = compose_cfg("experiment=synthetic_hih", "model.net.input_size=64",
                      "model.net.decimal_size=4")
    OmegaConf.save(cfg, tmp_path / "cfg.yaml")
    applied, kept = _faults_per_step("keep", tmp_path / "cfg.yaml")
    _, default = _faults_per_step("default", tmp_path / "cfg.yaml")
    assert applied
    # glibc's defaults trim and unmap a step's buffers (about 2,000 pages a step here, 50,000
    # at the main job's 128 px, batch 16); kept, a warm step faults almost none
    assert default > 500
    assert kept < default / 5


@glibc
def test_user_malloc_tunables_are_left_alone(monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1000000")
    assert allocator.keep_freed_memory() is False


def test_other_c_libraries_are_left_alone(monkeypatch):
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("musl", "1.2"))
    assert allocator.keep_freed_memory() is False


def test_training_and_evaluation_apply_it_before_building_anything(compose_cfg, monkeypatch):
    import hih_lightning.train as train

    order = []
    monkeypatch.setattr(train, "keep_freed_memory", lambda: order.append("malloc"))
    instantiate = train.instantiate_node
    monkeypatch.setattr(train, "instantiate_node",
                        lambda cfg, key, **kw: order.append(key) or instantiate(cfg, key, **kw))
    train.build(compose_cfg("logger=none"))  # hih-train's and hih-eval's common start
    assert order[:2] == ["malloc", "data"]
