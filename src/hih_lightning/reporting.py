"""What every test run leaves behind: metrics table (markdown + JSON), CED plot, prediction grid."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hih_lightning.analysis.plots import plot_ced, plot_landmark_grid
from hih_lightning.analysis.published_results import published_row
from hih_lightning.data.metainfo import DatasetMeta

log = logging.getLogger(__name__)


def results_rows(results: dict[str, float], meta: DatasetMeta) -> list[tuple[str, str]]:
    """(row name, key prefix) for the full set and each subset present in ``results``."""
    rows = [("full", "test/")]
    rows += [(name, f"test/{name}/") for name in meta.subsets if f"test/{name}/nme" in results]
    return rows


def results_grid(results: dict[str, float], meta: DatasetMeta, variant: str | None = None
                 ) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of the test report: NME / FR in %, AUC as a fraction (inter-ocular, and
    inter-pupil where defined), then the paper's NME for the same row; None = not measured.
    One grid for the markdown table and the W&B table, so they cannot disagree."""
    has_ip = any(k.endswith("nme_ip") for k in results)
    header = ["subset", "NME (%)", "FR@0.1 (%)", "AUC@0.1"]
    if has_ip:
        header += ["NME-IP (%)", "FR-IP (%)"]
    header += ["paper NME (%)"]
    keys = ["nme", "fr", "auc"] + (["nme_ip", "fr_ip"] if has_ip else [])
    rows = []
    for name, prefix in results_rows(results, meta):
        values = [results.get(prefix + key) for key in keys]
        row = [name] + [None if v is None else v * (1.0 if key == "auc" else 100.0)
                        for key, v in zip(keys, values, strict=True)]
        row.append(published_row(meta.name, variant or "", name)[0])
        rows.append(row)
    return header, rows


def results_table(results: dict[str, float], meta: DatasetMeta, variant: str | None = None
                  ) -> str:
    """Markdown table of :func:`results_grid` ("-" where not measured or not published)."""
    header, rows = results_grid(results, meta, variant)
    digits = [4 if title.startswith("AUC") else 2 for title in header]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row[0]] + ["-" if v is None else f"{v:.{d}f}"
                            for v, d in zip(row[1:], digits[1:], strict=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


_COLUMNS = {
    "NME": "mean landmark error over the inter-ocular distance (outer eye corners), per face",
    "NME-IP": "the same over the inter-pupil distance (eye centres)",
    "FR@0.1": "failure rate: faces whose NME exceeds 10 %",
    "AUC@0.1": "area under the cumulative error curve up to NME 10 %, scaled to 0..1 "
               "(1 = every face exact)",
    "FR-IP": "failure rate on NME-IP",
    "paper NME": "the HIH paper's NME for this dataset, variant and subset ('-': none)",
}


def columns_legend(table: str) -> str:
    """One line per column of ``table`` saying what it measures."""
    header = table.split("\n", 1)[0]
    return "\n".join(f"- {name}: {text}" for name, text in _COLUMNS.items()
                      if f"| {name} " in header)


def decimal_head_line(results: dict[str, float], decimal_size: int | None) -> str | None:
    """Whether a HIH run's decimal head earns its keep, in one line: NME with and without it
    (the integer heatmap alone) and its cell accuracy beside chance (1 / k^2); None when the
    run has no decimal head."""
    nme, integer = results.get("test/nme"), results.get("test/nme_integer")
    accuracy = results.get("test/decimal_acc")
    if nme is None or integer is None or accuracy is None or not decimal_size:
        return None
    change = "lowers" if nme < integer else "raises"
    cells = decimal_size * decimal_size
    return (f"Decimal head: NME {100 * nme:.2f} % with it, {100 * integer:.2f} % from the "
            f"integer heatmap alone (it {change} NME by {100 * abs(integer - nme):.2f}); "
            f"decimal cell accuracy {100 * accuracy:.2f} % (chance 1/{cells} = "
            f"{100 / cells:.2f} %).")


def write_run_report(model: Any, datamodule: Any, trainer: Any, out_dir: Path,
                     cfg: Any | None = None) -> dict[str, Path]:
    """Write metrics.{md,json}, ced.png and predictions.png into ``out_dir``; print the table;
    show the same on the W&B dashboard when the trainer has a WandbLogger."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results = dict(getattr(model, "test_results", {}))
    variant = None
    if cfg is not None:
        variant = cfg.model.net.get("variant")
    table = results_table(results, model.meta, variant)
    paths = {"json": out_dir / "metrics.json", "markdown": out_dir / "metrics.md"}
    report: dict[str, Any] = {"dataset": model.meta.name, "variant": variant, "metrics": results}
    skipped = getattr(datamodule, "skipped_images", None) or {}
    if skipped:  # data.bad_images=skip: the faces left out, each naming its image and why
        report["skipped_images"] = skipped
    paths["json"].write_text(json.dumps(report, indent=2))
    codec = type(getattr(model, "codec", None)).__name__.removesuffix("Codec")
    title = (f"# Test results: {model.meta.name}" + (f", {variant}" if variant else "")
             + (f", {codec} decoding" if codec != "NoneType" else ""))
    legend = columns_legend(table)
    decimal = decimal_head_line(results, getattr(getattr(model, "codec", None),
                                                 "decimal_size", None))
    if decimal is not None:
        legend += f"\n\n{decimal}"
    if skipped:
        counts = ", ".join(f"{split} {len(faces)}" for split, faces in skipped.items())
        legend += (f"\n\nFaces left out for a missing, truncated or corrupt image "
                   f"(data.bad_images=skip): {counts}; listed in metrics.json.")
    paths["markdown"].write_text(f"{title}\n\n{table}\n\n{legend}\n")
    print(f"\n{title}\n\n{table}\n\n{legend}\n", flush=True)
    errors = getattr(model, "test_errors", None)
    if errors is not None and len(errors):
        paths["ced"] = plot_ced({variant or "model": errors}, out_dir / "ced.png")
    grid = _prediction_grid(model, datamodule, out_dir / "predictions.png")
    if grid is not None:
        paths["predictions"] = grid
    log_report_to_wandb(getattr(trainer, "loggers", []),
                        results_grid(results, model.meta, variant), errors, paths)
    log.info("run report written to %s", out_dir)
    return paths


@torch.no_grad()
def _prediction_grid(model: Any, datamodule: Any, path: Path, count: int = 8) -> Path | None:
    """Predicted vs true landmarks on the first validation (else test) crops."""
    datasets = getattr(datamodule, "datasets", {})
    dataset = datasets.get("val") or datasets.get("test")
    if dataset is None or len(dataset) == 0:
        return None
    samples = [dataset[i] for i in range(min(count, len(dataset)))]
    images = torch.stack([s["image"] for s in samples]).to(model.device)
    was_training = model.training
    model.eval()
    preds = model.predict_crop(images).cpu().numpy()
    model.train(was_training)
    crops = images.permute(0, 2, 3, 1).cpu().numpy().astype(np.uint8)
    targets = np.stack([s["landmarks"].numpy() for s in samples])
    return plot_landmark_grid(crops, preds, targets, path)


# -- W&B dashboard ----------------------------------------------------------------------------
# Summaries a run table should show: the best validation epoch, not the last one. Keys that
# are not logged (e.g. val/decimal_acc without a decimal head) simply never appear.
WANDB_SUMMARIES: dict[str, str] = {
    "val/nme": "min", "val/fr": "min", "val/auc": "max", "val/nme_integer": "min",
    "val/decimal_acc": "max", "test/nme": "min", "test/fr": "min", "test/auc": "max",
}


def _wandb_loggers(loggers: Iterable[Any]) -> list[Any]:
    from lightning.pytorch.loggers import WandbLogger

    return [logger for logger in loggers if isinstance(logger, WandbLogger)]


def define_wandb_summaries(loggers: Iterable[Any]) -> None:
    """Give the W&B run min/max summaries of the NME/FR/AUC keys.

    wandb builds a summary from the rows logged after ``define_metric``, so this must run
    before training logs anything; the x-axis stays Lightning's ``trainer/global_step``.
    """
    for logger in _wandb_loggers(loggers):
        run = logger.experiment  # creates the run; a no-op stand-in on non-zero ranks
        for key, summary in WANDB_SUMMARIES.items():
            run.define_metric(key, step_metric="trainer/global_step", summary=summary)


def log_report_to_wandb(loggers: Iterable[Any], grid: tuple[list[str], list[list[Any]]],
                        errors: np.ndarray | None, paths: dict[str, Path]) -> None:
    """The run report on the W&B dashboard: per-subset table (``test/subsets``), cumulative
    error curve (``test/ced``, a line plot of the same curve as ced.png) and the prediction
    grid (``test/predictions``)."""
    wandb_loggers = _wandb_loggers(loggers)
    if not wandb_loggers:
        return
    import wandb

    from hih_lightning.metrics import ced_curve

    header, rows = grid
    for logger in wandb_loggers:
        logger.log_table(key="test/subsets", columns=header, data=rows)
        if errors is not None and len(errors):
            thresholds, fractions = ced_curve(torch.as_tensor(errors), steps=201)
            curve = wandb.Table(columns=["NME (%)", "images (%)"],
                                data=[[t * 100, f * 100] for t, f in
                                      zip(thresholds.tolist(), fractions.tolist(), strict=True)])
            logger.experiment.log({"test/ced": wandb.plot.line(
                curve, "NME (%)", "images (%)", title="Cumulative error distribution")})
        if "predictions" in paths:
            logger.log_image(key="test/predictions", images=[str(paths["predictions"])],
                             caption=["ground truth (green) vs prediction (red)"])
