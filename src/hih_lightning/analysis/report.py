"""hih-report: one table (mean +- std over seeds) from the jobs of a multirun sweep.

A job is any folder under the sweep directory with a ``.hydra/config.yaml``; its swept values
come from ``.hydra/overrides.yaml`` and its test metrics from the run report ``metrics.json``,
else the CSV logger's ``metrics.csv`` or the W&B run (``wandb-summary.json``, or for offline
runs the transaction log ``run-<id>.wandb``), so a sweep is collectable whichever logger it
used. The factors are the sweep's own ``hydra.sweeper.params`` and any other override whose
value differs between jobs, never ``seed``: jobs that differ only in the seed are repeats of
one setting and are averaged. Several sweep directories make one table, so sweeps can share
jobs; a factor a job did not override shows the value its config resolved to.

    hih-report logs/ablations/codec/2025-01-01_12-00-00     # writes report.{md,csv,png} there
    hih-report logs/ablations/decimal_loss/run1 logs/ablations/codec/run1 --by model/codec
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import statistics
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from hih_lightning.analysis.wandb_log import read_wandb_run

# (metric key, column title, display scale): fractions are shown as % like the run report
METRICS: tuple[tuple[str, str, float], ...] = (
    ("test/nme", "NME (%)", 100.0),
    ("test/fr", "FR@0.1 (%)", 100.0),
    ("test/auc", "AUC@0.1", 1.0),
    # HIH codecs only ('-' elsewhere): the integer heatmap decoded alone, and how often the
    # decimal head picks the right k x k cell (chance is 1/k^2)
    ("test/nme_integer", "integer-only NME (%)", 100.0),
    ("test/decimal_acc", "decimal acc (%)", 100.0),
)
SEED_KEY = "seed"
ABLATION_KEY = "ablation"  # the sweep's name, not a factor (it differs when sweeps are merged)


class ReportError(RuntimeError):
    """The sweep directory cannot be reported; the message names it."""


@dataclass
class Job:
    """One finished (or unfinished: ``metrics is None``) job of a sweep."""

    path: Path
    overrides: dict[str, str]
    metrics: dict[str, float] | None
    experiment: str
    ablation: str | None
    swept: list[str]  # keys of the sweep's hydra.sweeper.params
    resolved: dict[str, str]  # config-group choices and leaf values, for unswept factors

    def value(self, key: str) -> str:
        """The job's value of a factor: its override, else what its config resolved to
        (so the default of a factor another sweep varied is shown, not '-')."""
        return self.overrides.get(key, self.resolved.get(key, "-"))


@dataclass
class Row:
    """One setting of the factors, its seeds and per-metric (mean, std) over them."""

    setting: dict[str, str]
    seeds: list[str]
    stats: dict[str, tuple[float, float]]


def _natural_key(path: Path) -> list[object]:
    """Job folders sort as 0, 1, ..., 10 (the sweep's order), not 0, 1, 10, 2."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def _read_overrides(job_dir: Path) -> dict[str, str]:
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    items = OmegaConf.to_container(OmegaConf.load(path)) or []
    overrides = {}
    for item in items:
        key, _, value = str(item).partition("=")
        overrides[key.lstrip("+~")] = value
    return overrides


def _last_csv_values(path: Path) -> dict[str, float]:
    """Last non-empty value of each column of a Lightning CSVLogger ``metrics.csv``."""
    values: dict[str, float] = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            for key, value in row.items():
                if value not in (None, ""):
                    try:
                        values[key] = float(value)
                    except ValueError:
                        continue
    return values


def _summary_scalars(summary: dict[str, object]) -> dict[str, float]:
    """Scalars of a W&B summary; a {"min": .., "last": ..} entry gives its last value (else
    its min): the test metrics are logged once, so both are the same number."""
    values: dict[str, float] = {}
    for key, value in summary.items():
        if isinstance(value, dict):
            value = value.get("last", value.get("min"))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values[key] = float(value)
    return values


def _source_values(path: Path) -> dict[str, float]:
    if path.name == "metrics.csv":
        return _last_csv_values(path)
    if path.name == "wandb-summary.json":
        return _summary_scalars(json.loads(path.read_text()))
    return _summary_scalars(read_wandb_run(path).summary)  # run-<id>.wandb (offline runs)


def read_metrics(job_dir: Path) -> dict[str, float] | None:
    """The job's test metrics, or None when no source has ``test/nme`` (job not finished).

    Sources: the run report ``metrics.json``; else the newest CSV logger ``metrics.csv``,
    W&B ``wandb-summary.json`` or W&B transaction log ``run-<id>.wandb`` that has them.
    """
    report = job_dir / "metrics.json"
    if report.is_file():
        metrics = json.loads(report.read_text()).get("metrics", {})
        if "test/nme" in metrics:
            return {k: float(v) for k, v in metrics.items()}
    sources = [p for pattern in ("**/metrics.csv", "**/wandb-summary.json", "**/run-*.wandb")
               for p in job_dir.glob(pattern)]
    for source in sorted(sources, key=lambda p: p.stat().st_mtime, reverse=True):
        values = _source_values(source)
        if "test/nme" in values:
            return values
    return None


def _resolved_values(cfg: DictConfig, choices: dict[str, object] | None) -> dict[str, str]:
    """Flat 'a.b.c' -> value of the job's config leaves (interpolations left unresolved),
    plus its config-group choices ('model/codec' -> 'hih')."""
    values = {str(k): str(v) for k, v in (choices or {}).items()}

    def walk(node: object, prefix: str) -> None:
        if isinstance(node, dict):
            for key, child in node.items():
                walk(child, f"{prefix}{key}.")
        elif not isinstance(node, list):
            values.setdefault(prefix[:-1], str(node))

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    return values


def _job_configs(root: Path) -> list[Path]:
    """The ``.hydra/config.yaml`` of every job folder under ``root``. Linked folders are
    followed (a folder of links is a natural way to gather runs for one table), each real
    folder once, so a link loop ends."""
    configs, seen = [], set()
    for folder, subfolders, _ in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders.clear()
            continue
        seen.add(real)
        if (config := Path(folder) / ".hydra" / "config.yaml").is_file():
            configs.append(config)
    return configs


def find_jobs(sweep_dirs: Path | Sequence[Path]) -> list[Job]:
    """Every job folder under the sweep directories (each in the sweep's order), finished
    or not."""
    jobs = []
    for sweep_dir in [sweep_dirs] if isinstance(sweep_dirs, Path) else sweep_dirs:
        for config_path in sorted(_job_configs(Path(sweep_dir)), key=_natural_key):
            job_dir = config_path.parent.parent
            cfg = OmegaConf.load(config_path)
            hydra_path = job_dir / ".hydra" / "hydra.yaml"
            hydra_cfg = OmegaConf.load(hydra_path) if hydra_path.is_file() else OmegaConf.create()
            params = OmegaConf.select(hydra_cfg, "hydra.sweeper.params")
            choices = OmegaConf.select(hydra_cfg, "hydra.runtime.choices")
            jobs.append(Job(path=job_dir, overrides=_read_overrides(job_dir),
                            metrics=read_metrics(job_dir),
                            experiment=str(cfg.get("experiment_name", "?")),
                            ablation=OmegaConf.select(cfg, "ablation.name", default=None),
                            swept=[str(k) for k in (params or {})],
                            resolved=_resolved_values(
                                cfg, OmegaConf.to_container(choices) if choices else None)))
    return jobs


def factor_keys(jobs: Sequence[Job]) -> list[str]:
    """The sweep's own factors (its ``hydra.sweeper.params`` keys, even where a run pinned
    one to a single value), then any other override whose value differs between jobs (or is
    missing in some); never the seed."""
    keys: list[str] = []
    for job in jobs:
        keys += [k for k in job.swept if k in job.overrides and k not in keys]
    declared = set(keys)
    for job in jobs:
        keys += [k for k in job.overrides if k not in keys]
    return [k for k in keys if k not in (SEED_KEY, ABLATION_KEY)
            and (k in declared or len({job.value(k) for job in jobs}) > 1)]


def aggregate(jobs: Iterable[Job], factors: Sequence[str],
              metrics: Sequence[str] = tuple(m[0] for m in METRICS)) -> list[Row]:
    """Group finished jobs by their factor values (first-seen order) and average over seeds.

    std is the sample standard deviation (n - 1), NaN for a single seed; a metric missing
    from some jobs is averaged over the jobs that have it.
    """
    groups: dict[tuple[str, ...], list[Job]] = {}
    for job in jobs:
        if job.metrics is None:
            continue
        groups.setdefault(tuple(job.value(k) for k in factors), []).append(job)
    rows = []
    for values, members in groups.items():
        stats = {}
        for key in metrics:
            samples = [job.metrics[key] for job in members if key in job.metrics]
            if samples:
                std = statistics.stdev(samples) if len(samples) > 1 else math.nan
                stats[key] = (statistics.fmean(samples), std)
        rows.append(Row(setting=dict(zip(factors, values, strict=True)),
                        seeds=[job.overrides.get(SEED_KEY, "?") for job in members],
                        stats=stats))
    return rows


def _mean_std(stat: tuple[float, float] | None, scale: float, digits: int) -> str:
    if stat is None:
        return "-"
    mean, std = stat
    text = f"{mean * scale:.{digits}f}"
    return text if math.isnan(std) else f"{text} ± {std * scale:.{digits}f}"


def markdown_table(rows: Sequence[Row], factors: Sequence[str]) -> str:
    """Factor columns, then n seeds, then mean ± std of each metric."""
    header = [*factors, "seeds", *(title for _, title, _ in METRICS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row.setting[k] for k in factors] + [str(len(row.seeds))]
        cells += [_mean_std(row.stats.get(key), scale, 2 if scale != 1.0 else 4)
                  for key, _, scale in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(rows: Sequence[Row], factors: Sequence[str], path: Path) -> Path:
    """Machine-readable twin of the table, in the metrics' own units (fractions)."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*factors, "n_seeds", "seeds",
                         *(f"{key}_{s}" for key, _, _ in METRICS for s in ("mean", "std"))])
        for row in rows:
            cells: list[object] = [row.setting[k] for k in factors]
            cells += [len(row.seeds), " ".join(row.seeds)]
            for key, _, _ in METRICS:
                cells += list(row.stats.get(key, ("", "")))
            writer.writerow(cells)
    return path


def setting_label(row: Row) -> str:
    """'model.net.decimal_size=8' -> 'decimal_size=8'; several factors joined by ', '."""
    return ", ".join(f"{k.split('.')[-1].split('/')[-1]}={v}" for k, v in row.setting.items())


def write_report(sweep_dirs: Path | Sequence[Path], out_dir: Path | None = None,
                 factors: Sequence[str] | None = None,
                 where: Mapping[str, str] | None = None) -> dict[str, Path]:
    """Collect one or more sweep directories into one table; write report.md, report.csv and
    report.png into ``out_dir`` (default: the first sweep directory). Several directories
    let sweeps share jobs, e.g. the HIH rows of the codec sweep beside the decimal-loss
    sweep's other heads. ``where`` keeps only the jobs with these factor values (e.g. the
    codec sweep's HIH jobs). Raises ReportError when a directory is missing or no job
    finished."""
    from hih_lightning.analysis.plots import plot_mean_std_bars

    sweep_dirs = [Path(sweep_dirs)] if isinstance(sweep_dirs, (str, Path)) else [
        Path(d) for d in sweep_dirs]
    for sweep_dir in sweep_dirs:
        if not sweep_dir.is_dir():
            raise ReportError(f"{sweep_dir}: no such directory")
    jobs = [job for job in find_jobs(sweep_dirs)
            if all(job.value(k) == v for k, v in (where or {}).items())]
    finished = [job for job in jobs if job.metrics is not None]
    if not finished:
        raise ReportError(
            f"{', '.join(map(str, sweep_dirs))}: no finished jobs ({len(jobs)} job folders with "
            ".hydra/config.yaml, none with test metrics in metrics.json, metrics.csv or a W&B "
            "run)")
    factors = list(factors) if factors is not None else factor_keys(finished)
    rows = aggregate(finished, factors)
    out_dir = Path(out_dir or sweep_dirs[0])
    out_dir.mkdir(parents=True, exist_ok=True)
    ablations = list(dict.fromkeys(job.ablation for job in finished if job.ablation))
    experiments = sorted({job.experiment for job in finished})
    title = (f"# Ablation: {' + '.join(ablations) or ', '.join(factors) or 'runs'} "
             f"({', '.join(experiments)})")
    unfinished = [str(job.path.relative_to(sweep_dirs[0]) if len(sweep_dirs) == 1 else job.path)
                  for job in jobs if job.metrics is None]
    notes = [f"- sweep: {', '.join(map(str, sweep_dirs))}", f"- jobs: {len(finished)} finished"
             + (f", {len(unfinished)} unfinished ({', '.join(unfinished)})" if unfinished else ""),
             "- mean ± sample std over seeds (std omitted for a single seed)"]
    if where:
        notes.append("- only jobs with " + ", ".join(f"{k}={v}" for k, v in where.items()))
    table = markdown_table(rows, factors)
    paths = {"markdown": out_dir / "report.md", "csv": out_dir / "report.csv",
             "png": out_dir / "report.png"}
    paths["markdown"].write_text(f"{title}\n\n" + "\n".join(notes) + f"\n\n{table}\n")
    write_csv(rows, factors, paths["csv"])
    series = {}
    for key, name, scale in METRICS:
        if not any(key in row.stats for row in rows):
            continue  # e.g. the decimal-head columns of a sweep without a decimal head
        stats = [row.stats.get(key, (math.nan, math.nan)) for row in rows]
        series[name] = ([mean * scale for mean, _ in stats],
                        [0.0 if math.isnan(std) else std * scale for _, std in stats])
    plot_mean_std_bars([setting_label(row) or "all" for row in rows], series, paths["png"],
              title=title.lstrip("# "))
    print(f"{title}\n\n{table}\n\nwrote {', '.join(str(p) for p in paths.values())}")
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: ``hih-report SWEEP_DIR [--by KEY ...] [--out DIR]``."""
    parser = argparse.ArgumentParser(
        prog="hih-report", description=__doc__.split("\n")[0].split(": ", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="writes report.md (the table), report.csv and report.png (one bar per setting)"
               "\n\nexamples:\n  hih-report logs/ablations/codec/2025-01-01_12-00-00-000000\n"
               "  hih-report logs/ablations/decimal_loss/run1 logs/ablations/codec/run1 "
               "--by model/codec\n  hih-report logs/train/runs   # every single run so far")
    parser.add_argument("sweep_dir", type=Path, nargs="+",
                        help="multirun directories (hydra.sweep.dir), reported as one table")
    parser.add_argument("--by", nargs="+", default=None, metavar="KEY",
                        help="group by these override keys (default: the swept ones)")
    parser.add_argument("--where", nargs="+", default=[], metavar="KEY=VALUE",
                        help="keep only the jobs with these values (override or config)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write report.{md,csv,png} (default: SWEEP_DIR)")
    args = parser.parse_args(argv)
    where = dict(item.partition("=")[::2] for item in args.where)
    if any(not k or not v for k, v in where.items()):
        parser.error(f"--where takes KEY=VALUE items, got {args.where}")
    try:
        write_report(args.sweep_dir, args.out, args.by, where)
    except ReportError as err:
        print(f"hih-report: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
