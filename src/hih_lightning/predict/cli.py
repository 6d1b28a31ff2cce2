"""hih-predict: the Hydra entry point (conf/predict.yaml); the work is in :func:`run`."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from hih_lightning.config import CONFIG_DIR
from hih_lightning.predict.inputs import (
    BoxFile,
    Item,
    expand_input,
    input_root,
    is_video,
    read_items,
    video_fps,
    video_frame_count,
)
from hih_lightning.predict.outputs import Overlays, item_record, write_csv, write_json
from hih_lightning.predict.predictor import Predictor
from hih_lightning.run_folder import hydra_cli


def _chunks(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _progress(enabled: bool) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    return Progress("[progress.description]{task.description}", BarColumn(),
                    MofNCompleteColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True), disable=not enabled)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Predict on every input; write predictions.json / .csv (and overlays) to output_dir.

    Returns the paths written, the per-image records and the counts. A file that cannot be
    read is recorded with its error and the run goes on; an image with no face is recorded
    as "no_face".
    """
    paths = expand_input(cfg.input)
    boxes = BoxFile(cfg.boxes, paths, input_root(cfg.input)) if cfg.get("boxes") else None
    predictor = Predictor.from_config(cfg)
    stride = max(1, int(cfg.video_stride))
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    overlays = Overlays(out_dir / "overlays") if cfg.overlay else None
    fps = {str(p): video_fps(p) / stride for p in paths if is_video(p)}
    total = sum(-(-video_frame_count(p) // stride) if is_video(p) else 1 for p in paths)
    records: list[dict[str, Any]] = []
    with _progress(bool(cfg.progress)) as progress:
        task = progress.add_task("hih-predict", total=total or None)
        for chunk in _chunks(read_items(paths, stride), predictor.batch_size):
            readable = [item for item in chunk if item.image is not None]
            given = None if boxes is None else [boxes.lookup(i.name, i.frame) for i in readable]
            faces = iter(predictor.predict_many([i.image for i in readable], given))
            for item in chunk:
                item_faces = next(faces) if item.image is not None else []
                records.append(item_record(item, item_faces))
                if overlays is not None:
                    overlays.add(item, item_faces, fps.get(item.name, 25.0))
            progress.advance(task, len(chunk))
    if overlays is not None:
        overlays.close()
    written = {"json": write_json(out_dir / "predictions.json", predictor.describe(), records),
               "csv": write_csv(out_dir / "predictions.csv", records, predictor.num_landmarks)}
    counts = {status: sum(r["status"] == status for r in records)
              for status in ("ok", "no_face", "error")}
    faces_found = sum(len(r["faces"]) for r in records)
    for record in records:
        if record["status"] == "error":
            print(f"hih-predict: {record['error']}", file=sys.stderr)
    print(f"hih-predict: {len(records)} images/frames, {faces_found} faces; "
          f"{counts['no_face']} without a face, {counts['error']} unreadable -> "
          f"{written['json']}", flush=True)
    return {**written, "records": records, "counts": counts}


@hydra_cli("hih-predict", "predict")
@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="predict")
def main(cfg: DictConfig) -> None:
    """Exit status 1 when some input could not be read (after writing everything else), 2
    for a configuration error (one line, no traceback)."""
    from hih_lightning.run_folder import job_dir, user_errors

    with user_errors("hih-predict", job_dir()):
        result = run(cfg)
    if result["counts"]["error"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
