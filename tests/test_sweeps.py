"""Ablation sweeps (conf/ablation/), hih-report, and the W&B dashboard of a run."""

from __future__ import annotations

import csv
import itertools
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import OmegaConf

from hih_lightning.analysis.report import ReportError, main, write_report
from hih_lightning.analysis.wandb_log import find_run_logs, read_finished_wandb_run
from hih_lightning.config import CONFIG_DIR

ABLATIONS = sorted(p.stem for p in (CONFIG_DIR / "ablation").glob("*.yaml")
                   if not p.stem.startswith("_"))
TINY_DATA = ("data.train_size=8", "data.val_size=4", "data.test_size=4", "data.batch_size=4",
             "data.eval_batch_size=4", "data.num_workers=0")


def _compose(*overrides: str):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def _factor_values(ablation: str) -> dict[str, list[str]]:
    """The swept values of each factor of an ablation (its seeds left out)."""
    params = _compose(f"ablation={ablation}").hydra.sweeper.params
    return {key: str(values).split(",") for key, values in params.items() if key != "seed"}


# -- the sweep configs ----------------------------------------------------------------------
# What each ablation sweeps (one seed), written from its purpose (HIH_SPEC sections 2-4 and
# the ablation files' headers), not read from the configs.
SWEEP_DESIGN: dict[str, dict[str, list[str]]] = {
    "codec": {"model/codec": ["argmax", "quarter", "dark", "soft_argmax", "randomized_rounding",
                              "offset_map", "simcc", "hih", "hih_local"]},
    "decimal_loss": {"model/codec": ["hih", "hih_mse", "fc_offset", "offset_map"]},
    "decimal_size": {"model.net.decimal_size": ["4", "8", "16"]},
    "heatmap_sigma": {"model.codec.sigma": ["1.0", "1.5", "2.0"]},
    "local_decimal_size": {"model/codec": ["hih_local"], "model.net.decimal_size": ["2", "4"]},
    "soft_label": {"model.codec.soft_label": ["softmax", "gaussian"],
                   "model.codec.decimal_sigma": ["0.5", "1.0", "2.0"]},
    "stacks": {"model.net.num_stacks": ["1", "2", "4"]},
    # issue 28: HIH-local's window and weight, and each peer's main knob (64 px budget)
    "hih_window": {"model/codec": ["hih_local"], "model.codec.window": ["0", "1", "2"],
                   "model.codec.decimal_decode": ["argmax"],
                   "model.codec.soft_label": ["softmax", "gaussian"]},
    "hih_local_weight": {"model/codec": ["hih_local"],
                         "model.loss.decimal_weight": ["0.01", "0.05", "0.12", "0.3", "1.0"]},
    "offset_weight": {"model/codec": ["offset_map"],
                      "model.loss.offset_weight": ["0.005", "0.02", "0.06", "0.2"]},
    "offset_window": {"model/codec": ["offset_map"], "model.codec.window": ["1"],
                      "model.loss.offset_weight": ["0.002", "0.005", "0.02"]},
    "integral_weight": {"model/codec": ["soft_argmax"],
                        "model.loss.integral_weight": ["0.1", "0.3", "1.0", "3.0"]},
    "simcc": {"model/codec": ["simcc"], "model.loss.simcc_weight": ["0.1", "0.3", "1.0"],
              "model.codec.label_sigma": ["0.5", "0.71"]},
}


def test_every_ablation_has_a_design():
    assert sorted(SWEEP_DESIGN) == ABLATIONS


def test_every_ablation_is_listed_in_the_makefile():
    makefile = (CONFIG_DIR.parent / "Makefile").read_text()
    line = next(x for x in makefile.splitlines() if x.startswith("ABLATIONS :="))
    assert sorted(line.split(":=")[1].split()) == ABLATIONS


@pytest.mark.parametrize("ablation", ABLATIONS)
def test_every_job_of_every_ablation_composes_and_builds(ablation):
    cfg = _compose(f"ablation={ablation}")
    assert cfg.ablation.name == ablation
    assert ablation in cfg.tags and cfg.experiment_name in cfg.tags
    assert str(cfg.hydra.sweeper.params.seed).split(",") == ["0", "1", "2"]
    assert f"/ablations/{ablation}/" in cfg.hydra.sweep.dir  # logs/ablations/<name>/<stamp>
    # Every combination of the factor's values (one seed): what Hydra would launch.
    params = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items() if k != "seed"]
    parser = OverridesParser.create()
    (jobs,) = BasicSweeper.split_arguments(parser.parse_overrides(params), None)
    # the jobs Hydra launches are the factor grid each ablation is meant to sweep, each once
    design = SWEEP_DESIGN[ablation]
    grid = [tuple(f"{k}={v}" for k, v in zip(design, values, strict=True))
            for values in itertools.product(*design.values())]
    assert sorted(tuple(job) for job in jobs) == sorted(grid)
    for job in jobs:
        job_cfg = _compose(f"ablation={ablation}", *job)
        for override in job:  # the value reached the config (or chose the config group)
            key, value = override.split("=")
            chosen = (job_cfg.hydra.runtime.choices[key] if "/" in key
                      else OmegaConf.select(job_cfg, key))
            assert str(chosen) == value
        instantiate(job_cfg.model.net)  # builds: e.g. k = 16 needs a 64x64 heatmap
        codec = instantiate(job_cfg.model.codec)
        assert codec.heatmap_size * 4 == job_cfg.model.net.input_size, job


def test_an_ablation_runs_on_a_benchmark_recipe_unchanged():
    cfg = _compose("ablation=stacks", "experiment=wflw_hih_t")
    assert cfg.data.dataset == "wflw" and "train_size" not in cfg.data
    assert cfg.trainer.max_epochs == 60 and cfg.ablation.group == "wflw_hih_t-stacks"


def test_the_64px_study_budget_keeps_its_own_schedule():
    """The sub-pixel study's 64 px tables are 1,000-step runs on 2,000 faces with drops at
    epochs 5 and 7 (experiments/subpixel/README.md), whatever the main job's budget; the
    optimiser is the main job's."""
    study, main_job = _compose("experiment=synthetic_ablation_64"), _compose(
        "experiment=synthetic_hih")
    assert (study.data.train_size, study.data.val_size) == (2000, 200)
    assert study.data.train_size // study.data.batch_size * study.trainer.max_epochs == 1000
    assert list(study.model.scheduler.milestones) == [5, 7]
    assert study.model.optimizer == main_job.model.optimizer
    # the main job: 1,800 faces x 7 epochs (the last at a tenth of the rate) = 784 steps
    assert main_job.data.train_size // main_job.data.batch_size * main_job.trainer.max_epochs \
        == 784
    assert list(main_job.model.scheduler.milestones) == [6]


@pytest.mark.parametrize(("launcher", "target"), [("basic", "BasicLauncher"),
                                                  ("joblib", "JoblibLauncher"),
                                                  ("slurm", "SlurmLauncher")])
def test_launchers_compose(launcher, target):
    cfg = _compose("ablation=codec", f"hydra/launcher={launcher}")
    assert cfg.hydra.launcher._target_.endswith(target)
    if launcher == "slurm":
        assert cfg.hydra.launcher.gpus_per_node == 1 and cfg.hydra.launcher.timeout_min >= 60


# -- hih-report on hand-made job folders ----------------------------------------------------
def _make_job(folder: Path, overrides: list[str], metrics: dict[str, float] | None,
              params: dict[str, str], ablation: str = "codec") -> Path:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(
        {"experiment_name": "synthetic_ablation", "ablation": {"name": ablation}}))
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (folder / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(
        {"hydra": {"sweeper": {"params": params}}}))
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps({"metrics": metrics}))
    return folder


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_report_means_and_stds_over_seeds_per_factor_value(tmp_path):
    params = {"model/codec": "argmax,hih", "seed": "0,1,2"}
    nme = {("argmax", 0): 0.051, ("argmax", 1): 0.049, ("argmax", 2): 0.053,
           ("hih", 0): 0.047, ("hih", 1): 0.0442}  # hih seed 2 never finished
    for num, (codec, seed) in enumerate([(c, s) for c in ("argmax", "hih") for s in range(3)]):
        value = nme.get((codec, seed))
        metrics = None if value is None else {"test/nme": value, "test/fr": value * 2,
                                               "test/auc": 1 - value * 5}
        if metrics is not None and codec == "hih":  # only HIH has the decimal-head columns
            metrics |= {"test/nme_integer": value + 0.01, "test/decimal_acc": 0.02 + 0.01 * seed}
        _make_job(tmp_path / str(num), [f"model/codec={codec}", f"seed={seed}", "ablation=codec"],
                  metrics, params)
    paths = write_report(tmp_path)
    rows = {row["model/codec"]: row for row in _csv_rows(paths["csv"])}
    for codec in ("argmax", "hih"):
        values = [v for (c, _), v in nme.items() if c == codec]
        assert int(rows[codec]["n_seeds"]) == len(values)
        assert float(rows[codec]["test/nme_mean"]) == pytest.approx(statistics.fmean(values))
        assert float(rows[codec]["test/nme_std"]) == pytest.approx(statistics.stdev(values))
        assert float(rows[codec]["test/fr_mean"]) == pytest.approx(2 * statistics.fmean(values))
    table = paths["markdown"].read_text()
    assert "| hih | 2 | 4.56 ± 0.20 |" in table  # mean 4.56 %, sample std 0.198 %
    # decimal acc of seeds 0 and 1: 2 % and 3 % -> 2.50 ± 0.71; argmax has no decimal head
    assert table.splitlines()[-1].endswith("| 5.56 ± 0.20 | 2.50 ± 0.71 |")
    assert "| - | - |" in next(line for line in table.splitlines() if line.startswith("| argmax"))
    assert float(rows["hih"]["test/decimal_acc_mean"]) == pytest.approx(0.025)
    assert "1 unfinished (5)" in table
    assert paths["png"].stat().st_size > 0


def test_report_reads_the_csv_logger_when_there_is_no_metrics_json(tmp_path):
    params = {"model.codec.sigma": "1.0,2.0", "seed": "0,1,2"}
    for num, sigma in enumerate(("1.0", "2.0")):
        job = _make_job(tmp_path / str(num), [f"model.codec.sigma={sigma}", "seed=0"], None,
                        params, ablation="heatmap_sigma")
        (job / "csv").mkdir()
        (job / "csv" / "metrics.csv").write_text(
            "epoch,step,train/loss,test/nme,test/fr,test/auc\n"
            f"0,9,0.5,,,\n0,10,,{0.04 * float(sigma)},0.01,0.6\n")
    rows = _csv_rows(write_report(tmp_path)["csv"])
    assert [r["model.codec.sigma"] for r in rows] == ["1.0", "2.0"]
    assert [float(r["test/nme_mean"]) for r in rows] == pytest.approx([0.04, 0.08])
    assert rows[0]["test/nme_std"] == "nan"  # one seed: no spread to report


def test_report_follows_linked_run_folders_once(tmp_path):
    """Runs gathered as links in one folder make one table; a link loop does not hang it."""
    params = {"model/codec": "argmax,hih", "seed": "0,1"}
    for num, (codec, seed, nme) in enumerate([("argmax", 0, 0.05), ("argmax", 1, 0.07),
                                              ("hih", 0, 0.04)]):
        _make_job(tmp_path / "runs" / str(num), [f"model/codec={codec}", f"seed={seed}"],
                  {"test/nme": nme, "test/fr": 0.0, "test/auc": 0.5}, params)
    gathered = tmp_path / "gathered"
    gathered.mkdir()
    for num in range(3):
        (gathered / f"run{num}").symlink_to(tmp_path / "runs" / str(num))
    (gathered / "loop").symlink_to(gathered)
    rows = {r["model/codec"]: r for r in _csv_rows(write_report(gathered)["csv"])}
    assert {codec: int(r["n_seeds"]) for codec, r in rows.items()} == {"argmax": 2, "hih": 1}
    assert float(rows["argmax"]["test/nme_mean"]) == pytest.approx(0.06)


def test_report_without_finished_jobs_names_the_directory(tmp_path, capsys):
    _make_job(tmp_path / "0", ["seed=0"], None, {"seed": "0,1"})
    with pytest.raises(ReportError, match=f"{tmp_path}: no finished jobs"):
        write_report(tmp_path)
    assert main([str(tmp_path / "missing")]) == 2
    assert "missing: no such directory" in capsys.readouterr().err


# -- real multiruns (slow) ------------------------------------------------------------------
def _multirun(tmp_path: Path, *overrides: str, env: dict[str, str] | None = None) -> Path:
    """``hih-train -m ...`` in a subprocess (Hydra's real sweeper and launcher)."""
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "hih_lightning.train", "-m", *overrides, *TINY_DATA,
           "callbacks.progress_bar=null", "callbacks.model_summary=null",
           f"paths.log_dir={tmp_path / 'logs'}", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return sweep


def _job_metrics(sweep: Path) -> list[dict[str, float]]:
    return [json.loads((sweep / str(n) / "metrics.json").read_text())["metrics"]
            for n in range(2)]


# One sweep runs its two jobs in parallel processes (joblib), the others one after another.
LAUNCHERS = {"codec": ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")}


@pytest.mark.slow
@pytest.mark.parametrize("ablation", ABLATIONS)
def test_two_job_sweep_runs_and_reports_the_mean_over_seeds(tmp_path, ablation):
    # each factor pinned to its last value (k = 16, 4 stacks, ...), seeds 0 and 1
    pinned = [f"{k}={v[-1]}" for k, v in _factor_values(ablation).items()]
    sweep = _multirun(tmp_path, f"ablation={ablation}", *pinned, "seed=0,1",
                      "debug=fast_dev_run", *LAUNCHERS.get(ablation, ()))
    jobs = _job_metrics(sweep)
    (row,) = _csv_rows(write_report(sweep)["csv"])
    assert [row[k.split("=")[0]] for k in pinned] == [k.split("=")[1] for k in pinned]
    assert row["n_seeds"] == "2" and row["seeds"] == "0 1"
    for key in ("test/nme", "test/fr", "test/auc"):
        values = [job[key] for job in jobs]
        assert float(row[f"{key}_mean"]) == pytest.approx((values[0] + values[1]) / 2)
        assert float(row[f"{key}_std"]) == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5)


# -- W&B (slow: a few tiny epochs each) -----------------------------------------------------
@pytest.fixture
def wandb_offline(tmp_path, monkeypatch) -> dict[str, str]:
    env = {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.mark.slow
def test_wandb_offline_run_has_the_dashboard_summaries(compose_cfg, wandb_offline):
    import wandb

    from hih_lightning.train import run

    # (the run name comes from Hydra's job overrides, which compose() does not set)
    cfg = compose_cfg("logger=wandb", "logger.wandb.name=tiny", "trainer.log_every_n_steps=1")
    metrics = run(cfg)
    assert wandb.run is None  # finished, so the next job of a multirun starts its own
    (log_path,) = find_run_logs(Path(cfg.paths.output_dir))
    log = read_finished_wandb_run(log_path)
    assert log.exit_code == 0
    assert log.group == "default" and log.tags == ["dev"]
    assert log.config["model"]["codec"]["_target_"].endswith("HIHCodec")
    summary = log.summary
    assert isinstance(summary["train/loss"], float)  # per-step losses
    assert summary["val/nme"] == {"min": pytest.approx(metrics["val/nme"])}
    assert summary["test/nme"] == {"min": pytest.approx(metrics["test/nme"])}
    assert summary["test/subsets"]["_type"] == "table-file"
    assert summary["test/subsets"]["nrows"] == 7  # full + the six WFLW-style subsets
    assert summary["test/ced_table"]["_type"] == "table-file"
    assert summary["test/predictions"]["_type"].startswith("images")


@pytest.mark.slow
def test_wandb_multirun_starts_a_fresh_run_per_job_and_is_reportable(tmp_path, wandb_offline):
    sweep = _multirun(tmp_path, "ablation=codec", "model/codec=hih", "seed=0,1", "debug=tiny",
                      "logger=wandb", env=wandb_offline)
    logs = [read_finished_wandb_run(p) for n in range(2) for p in find_run_logs(sweep / str(n))]
    assert len(logs) == 2 and logs[0].run_id != logs[1].run_id
    for log, seed in zip(logs, (0, 1), strict=True):
        assert log.group == "synthetic_ablation-codec" and "codec" in log.tags
        assert log.config["seed"] == seed
    # hih-report from the W&B logs alone equals the mean of the jobs' metrics.json
    expected = statistics.fmean(job["test/nme"] for job in _job_metrics(sweep))
    for n in range(2):
        (sweep / str(n) / "metrics.json").unlink()
        for path in (sweep / str(n)).glob("**/metrics.csv"):
            path.unlink()
    (row,) = _csv_rows(write_report(sweep)["csv"])
    assert float(row["test/nme_mean"]) == pytest.approx(expected, rel=1e-6)


def test_report_merges_sweeps_and_fills_unswept_factors_from_the_config(tmp_path):
    """The decimal-loss sweep's other heads beside the codec sweep's HIH jobs: one table, the
    HIH rows' offset weight taken from their resolved config instead of '-'."""
    codec_dir, loss_dir = tmp_path / "codec", tmp_path / "decimal_loss"
    for seed in range(2):
        job = _make_job(codec_dir / str(seed), ["model/codec=hih", f"seed={seed}",
                                                "ablation=codec"],
                        {"test/nme": 0.05 + 0.01 * seed}, {"model/codec": "hih", "seed": "0,1"})
        (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(
            {"experiment_name": "synthetic_ablation_64", "ablation": {"name": "codec"},
             "model": {"loss": {"offset_weight": 1.0}}}))
        _make_job(loss_dir / str(seed), ["model/codec=fc_offset", f"seed={seed}",
                                         "model.loss.offset_weight=0.02", "ablation=decimal_loss"],
                  {"test/nme": 0.08}, {"model/codec": "fc_offset", "seed": "0,1"},
                  ablation="decimal_loss")
    paths = write_report([loss_dir, codec_dir], out_dir=tmp_path / "out")
    rows = _csv_rows(paths["csv"])
    assert [(r["model/codec"], r["model.loss.offset_weight"]) for r in rows] == [
        ("fc_offset", "0.02"), ("hih", "1.0")]  # 'ablation' differs but is not a factor
    assert float(rows[1]["test/nme_mean"]) == pytest.approx(0.055)
    assert "# Ablation: decimal_loss + codec" in paths["markdown"].read_text()
    assert main([str(loss_dir), str(codec_dir), "--out", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "report.csv").read_text() == paths["csv"].read_text()
    # --where keeps the codec sweep's HIH jobs only
    assert main([str(loss_dir), str(codec_dir), "--where", "model/codec=hih",
                 "--out", str(tmp_path / "hih")]) == 0
    only = _csv_rows(tmp_path / "hih" / "report.csv")
    assert [r["model/codec"] for r in only] == ["hih"] and only[0]["n_seeds"] == "2"


def test_report_where_without_a_value_is_a_usage_error_naming_it(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path), "--where", "model/codec"])
    assert exit_info.value.code == 2
    assert "--where takes KEY=VALUE items, got ['model/codec']" in capsys.readouterr().err
