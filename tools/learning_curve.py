"""Learning curves of runs from their CSV logger metrics: a PNG and a table every 8 epochs.

Reads each run folder's newest ``metrics.csv`` (Lightning CSVLogger, anywhere under the run;
also readable while the run trains), plots the keys against the training step (one subplot
per key, one line per run, the 1/k^2 chance line on decimal_acc when the run's config has
``model.net.decimal_size``) and prints, per run, the keys at every 8th epoch and the last.
Fractions (NME, FR, decimal acc) are shown in % like hih-report.

    python tools/learning_curve.py logs/diag/published_16x --out curve.png
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from hih_lightning.analysis.report import METRICS  # noqa: E402

DEFAULT_KEYS = ("val/decimal_acc", "val/nme", "val/nme_integer")
SCALES = {key.split("/", 1)[1]: scale for key, _, scale in METRICS}  # "nme" -> 100.0


def find_metrics_csv(run: Path) -> Path:
    """The newest ``metrics.csv`` under ``run`` (a resumed run may have several versions)."""
    found = sorted(run.glob("**/metrics.csv"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no metrics.csv under {run}")
    return found[-1]


def read_curves(path: Path, keys: list[str]) -> dict[str, list[tuple[int, int, float]]]:
    """{key: [(epoch, step, value), ...]} for the rows where the key has a value."""
    curves: dict[str, list[tuple[int, int, float]]] = {key: [] for key in keys}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            for key in keys:
                if row.get(key) not in (None, ""):
                    point = (int(float(row["epoch"])), int(float(row["step"])), float(row[key]))
                    curves[key].append(point)
    return curves


def scale(key: str) -> float:
    return SCALES.get(key.rsplit("/", 1)[-1], 1.0)


def decimal_size(run: Path) -> int | None:
    config = run / ".hydra" / "config.yaml"
    if not config.is_file():
        return None
    value = OmegaConf.select(OmegaConf.load(config), "model.net.decimal_size")
    return int(value) if isinstance(value, int) else None


def table(curves: dict[str, list[tuple[int, int, float]]], every: int = 8) -> str:
    """Markdown rows at epochs 0, every, 2*every, ... and the last logged epoch."""
    by_epoch: dict[int, dict[str, tuple[int, float]]] = {}
    for key, points in curves.items():
        for epoch, step, value in points:  # the last value of an epoch wins
            by_epoch.setdefault(epoch, {})[key] = (step, value)
    epochs = sorted(by_epoch)
    chosen = [e for e in epochs if e % every == 0] + epochs[-1:]
    keys = list(curves)
    lines = ["| epoch | step | " + " | ".join(f"{k}{' (%)' if scale(k) != 1 else ''}"
                                             for k in keys) + " |",
             "|---:|---:|" + "---:|" * len(keys)]
    for epoch in dict.fromkeys(chosen):
        row = by_epoch[epoch]
        step = max(step for step, _ in row.values())
        cells = [f"{scale(k) * row[k][1]:.2f}" if k in row else "-" for k in keys]
        lines.append(f"| {epoch} | {step} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(runs: dict[str, dict[str, list[tuple[int, int, float]]]], chance: dict[str, int],
         keys: list[str], out: Path) -> None:
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.6), dpi=110,
                             squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for name, curves in runs.items():
            points = curves[key]
            ax.plot([p[1] for p in points], [scale(key) * p[2] for p in points],
                    marker=".", label=name)
        if key.endswith("decimal_acc"):
            for k in sorted(set(chance.values())):
                ax.axhline(100 / k**2, color="grey", ls="--", label=f"chance 1/{k}^2")
        ax.set(xlabel="step", ylabel=key + (" (%)" if scale(key) != 1 else ""), title=key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="run folders")
    parser.add_argument("--out", type=Path, default=Path("learning_curve.png"))
    parser.add_argument("--keys", nargs="+", default=list(DEFAULT_KEYS))
    parser.add_argument("--every", type=int, default=8, help="table row every N epochs")
    args = parser.parse_args()
    runs, chance = {}, {}
    for run in args.runs:
        path = find_metrics_csv(run)
        name = run.name if run.name not in runs else str(run)
        runs[name] = read_curves(path, args.keys)
        k = decimal_size(run)
        if k is not None:
            chance[name] = k
        suffix = f"; chance 1/k^2 = {100 / k**2:.2f} %" if k else ""
        print(f"\n{name} ({path}{suffix})\n")
        print(table(runs[name], args.every))
    plot(runs, chance, args.keys, args.out)
    missing = [k for k in args.keys if not any(c[k] for c in runs.values())]
    if missing:
        print(f"\nno values logged for {missing}")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
