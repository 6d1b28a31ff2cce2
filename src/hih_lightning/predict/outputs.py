"""What hih-predict writes: one JSON and one CSV of every image's faces, and overlays."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from hih_lightning.predict.inputs import Item
from hih_lightning.predict.predictor import Face


def item_record(item: Item, faces: list[Face]) -> dict[str, Any]:
    """An image's JSON entry: status "ok", "no_face" (reported, not an error) or "error"."""
    record: dict[str, Any] = {"image": item.name}
    if item.frame >= 0:
        record["frame"] = item.frame
    if item.error is not None:
        return {**record, "status": "error", "error": item.error, "faces": []}
    height, width = item.image.shape[:2]
    return {**record, "width": width, "height": height,
            "status": "ok" if faces else "no_face", "faces": [f.to_json() for f in faces]}


def write_json(path: Path, model: dict[str, Any], records: list[dict[str, Any]]) -> Path:
    """``{"model": ..., "images": [...]}``; coordinates in image pixels, (0, 0) = the centre of
    the top-left pixel."""
    path.write_text(json.dumps({"model": model, "images": records}, indent=1))
    return path


def write_csv(path: Path, records: list[dict[str, Any]], num_landmarks: int) -> Path:
    """One row per face (an image without faces: one row with its status and no numbers):
    image, frame, face, status, box_x1..box_y2, x0, y0, ..., score0, ..."""
    header = ["image", "frame", "face", "status", "box_x1", "box_y1", "box_x2", "box_y2"]
    header += [f"{axis}{i}" for i in range(num_landmarks) for axis in "xy"]
    header += [f"score{i}" for i in range(num_landmarks)]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for record in records:
            frame = record.get("frame", "")
            if not record["faces"]:
                writer.writerow([record["image"], frame, "", record["status"]])
            for index, face in enumerate(record["faces"]):
                writer.writerow([record["image"], frame, index, record["status"], *face["box"],
                                 *np.ravel(face["landmarks"]).tolist(), *face["scores"]])
    return path


def draw_faces(image: np.ndarray, faces: list[Face]) -> np.ndarray:
    """A BGR copy of the RGB ``image`` with each face's box (green) and landmarks (red)."""
    canvas = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    scale = max(1, round(max(image.shape[:2]) / 400))
    for face in faces:
        x1, y1, x2, y2 = (round(float(v)) for v in face.box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), (0, 200, 0), scale)
        for x, y in face.landmarks:
            cv2.circle(canvas, (round(float(x)), round(float(y))), scale, (0, 0, 255), -1)
    return canvas


class Overlays:
    """Overlay images (``<index>_<name>.jpg``) and overlay videos (``<index>_<name>.mp4``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.names: dict[str, Path] = {}
        self.writers: dict[str, cv2.VideoWriter] = {}

    def _target(self, name: str, suffix: str) -> Path:
        if name not in self.names:
            self.names[name] = self.folder / f"{len(self.names):04d}_{Path(name).stem}{suffix}"
        return self.names[name]

    def add(self, item: Item, faces: list[Face], fps: float = 25.0) -> None:
        if item.image is None:
            return
        canvas = draw_faces(item.image, faces)
        if item.frame < 0:
            cv2.imwrite(str(self._target(item.name, ".jpg")), canvas)
            return
        if item.name not in self.writers:
            height, width = canvas.shape[:2]
            self.writers[item.name] = cv2.VideoWriter(
                str(self._target(item.name, ".mp4")), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                (width, height))
        self.writers[item.name].write(canvas)

    def close(self) -> None:
        for writer in self.writers.values():
            writer.release()
        self.writers.clear()
