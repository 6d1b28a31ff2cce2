"""What every test run leaves behind: metrics table (markdown + JSON), CED plot, prediction grid."""

from __future__ import annotations

import json
import logging
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


def results_table(results: dict[str, float], meta: DatasetMeta, variant: str | None = None
                  ) -> str:
    """Markdown table of NME / FR / AUC (inter-ocular, and inter-pupil where defined), with
    the paper's NME for the same rows when it published one."""
    has_ip = any(k.endswith("nme_ip") for k in results)
    header = ["subset", "NME (%)", "FR@0.1 (%)", "AUC@0.1"]
    if has_ip:
        header += ["NME-IP (%)", "FR-IP (%)"]
    header += ["paper NME (%)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def cell(key: str, scale: float = 100.0, digits: int = 2) -> str:
        value = results.get(key)
        return "-" if value is None else f"{value * scale:.{digits}f}"

    for name, prefix in results_rows(results, meta):
        row = [name, cell(prefix + "nme"), cell(prefix + "fr"), cell(prefix + "auc", 1.0, 4)]
        if has_ip:
            row += [cell(prefix + "nme_ip"), cell(prefix + "fr_ip")]
        paper, _ = published_row(meta.name, variant or "", name)
        row.append("-" if paper is None else f"{paper:.2f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def write_run_report(model: Any, datamodule: Any, trainer: Any, out_dir: Path,
                     cfg: Any | None = None) -> dict[str, Path]:
    """Write metrics.{md,json}, ced.png and predictions.png into ``out_dir``; print the table."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results = dict(getattr(model, "test_results", {}))
    variant = None
    if cfg is not None:
        variant = cfg.model.net.get("variant")
    table = results_table(results, model.meta, variant)
    paths = {"json": out_dir / "metrics.json", "markdown": out_dir / "metrics.md"}
    paths["json"].write_text(json.dumps({"dataset": model.meta.name, "variant": variant,
                                         "metrics": results}, indent=2))
    title = f"# Test results: {model.meta.name}" + (f", {variant}" if variant else "")
    paths["markdown"].write_text(f"{title}\n\n{table}\n")
    print(f"\n{title}\n\n{table}\n", flush=True)
    errors = getattr(model, "test_errors", None)
    if errors is not None and len(errors):
        paths["ced"] = plot_ced({variant or "model": errors}, out_dir / "ced.png")
    grid = _prediction_grid(model, datamodule, out_dir / "predictions.png")
    if grid is not None:
        paths["predictions"] = grid
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
