"""Build the embedded WFLW-98 point-distribution model used by the synthetic faces.

One-off script: the committed artefact is ``src/hih_lightning/assets/wflw_shape_model.npz``.
It lets the default dataset draw faces whose shapes vary like real WFLW faces without
shipping any images.

Input: the six official WFLW attribute test lists (``x0 y0 ... x97 y97 image_name``), merged
into unique faces (key = image name + coordinates). Attribute flags are rebuilt from subset
membership (a face is in subset k exactly when its flag k is 1).

Method: generalised Procrustes analysis with similarity transforms (translation, scale,
rotation; no reflection), then PCA of the aligned shapes.

Normalisation of the stored mean: centroid at the origin, outer-eye-corner axis (60 -> 72)
horizontal and of length 1 (unit inter-ocular distance), y pointing down as in images.
Modes are unit vectors (196,) in that frame, ``mode_std`` their standard deviations in
inter-ocular units.

Usage: python tools/build_shape_model.py [--data DIR] [--out FILE] [--modes 12]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

SUBSET_FILES = ("largepose", "expression", "illumination", "makeup", "occlusion", "blur")
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "wflw" / "WFLW_annotations" / "list_98pt_test"
DEFAULT_OUT = ROOT / "src" / "hih_lightning" / "assets" / "wflw_shape_model.npz"


def read_faces(data_dir: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Merge the six subset lists into unique faces: (F, 98, 2) shapes, (F, 6) flags, files."""
    faces: dict[str, int] = {}
    shapes: list[np.ndarray] = []
    flags: list[np.ndarray] = []
    files = []
    for k, name in enumerate(SUBSET_FILES):
        path = data_dir / f"list_98pt_test_{name}.txt"
        files.append(path.name)
        for line in path.read_text().splitlines():
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 197:
                raise ValueError(f"{path}: expected 197 fields, got {len(fields)}")
            key = fields[196] + " " + " ".join(fields[:196])
            if key not in faces:
                faces[key] = len(shapes)
                shapes.append(np.asarray(fields[:196], dtype=np.float64).reshape(98, 2))
                flags.append(np.zeros(6, dtype=np.int64))
            flags[faces[key]][k] = 1
    return np.stack(shapes), np.stack(flags), files


def align(shape: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Similarity-align ``shape`` onto ``target`` (both centred) by least squares."""
    a = (shape * target).sum()
    b = (shape[:, 0] * target[:, 1] - shape[:, 1] * target[:, 0]).sum()
    denom = (shape**2).sum()
    sa, sb = a / denom, b / denom  # s*cos, s*sin
    rot = np.array([[sa, sb], [-sb, sa]])  # row-vector form of [[c, -s], [s, c]] * s
    return shape @ rot


def normalise(mean: np.ndarray) -> np.ndarray:
    """Centre, rotate the 60->72 axis to horizontal and scale it to length 1."""
    mean = mean - mean.mean(axis=0)
    axis = mean[72] - mean[60]
    angle = np.arctan2(axis[1], axis[0])
    c, s = np.cos(-angle), np.sin(-angle)
    mean = mean @ np.array([[c, s], [-s, c]])
    return mean / np.linalg.norm(axis)


def procrustes(shapes: np.ndarray, iters: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Generalised Procrustes: returns (aligned shapes, mean), both in the mean's frame."""
    centred = shapes - shapes.mean(axis=1, keepdims=True)
    mean = normalise(centred[0])
    for _ in range(iters):
        aligned = np.stack([align(s, mean) for s in centred])
        new_mean = normalise(aligned.mean(axis=0))
        if np.abs(new_mean - mean).max() < 1e-10:
            break
        mean = new_mean
    aligned = np.stack([align(s, mean) for s in centred])
    return aligned, mean


def build(data_dir: Path, num_modes: int) -> dict[str, np.ndarray]:
    """Everything stored in the npz (see the module docstring)."""
    shapes, flags, files = read_faces(data_dir)
    aligned, mean = procrustes(shapes)
    x = (aligned - mean).reshape(len(aligned), -1)
    _, sing, vt = np.linalg.svd(x, full_matrices=False)
    var = sing**2 / (len(x) - 1)
    modes = vt[:num_modes]
    # Fix each mode's sign so that the build is reproducible.
    signs = np.sign(modes[np.arange(num_modes), np.abs(modes).argmax(axis=1)])
    modes = modes * signs[:, None]
    coeffs = x @ modes.T  # (F, M)
    std = np.sqrt(var[:num_modes])
    z = coeffs / std
    pose = flags[:, 0] == 1
    return {
        "mean": mean.astype(np.float32),
        "modes": modes.reshape(num_modes, 98, 2).astype(np.float32),
        "mode_std": std.astype(np.float32),
        "variance_explained": (var[:num_modes] / var.sum()).astype(np.float32),
        # Per-subset mean / std of the standardised coefficients: the "pose" flag samples
        # from the largepose distribution, other flags may use theirs.
        "subset_names": np.array(["pose", "expression", "illumination", "makeup",
                                  "occlusion", "blur"]),
        "subset_z_mean": np.stack([z[flags[:, k] == 1].mean(0) for k in range(6)]).astype(
            np.float32),
        "subset_z_std": np.stack([z[flags[:, k] == 1].std(0) for k in range(6)]).astype(
            np.float32),
        "largepose_z": z[pose].astype(np.float16),  # (326, M) for empirical sampling
        "num_faces": np.int64(len(shapes)),
        "source_files": np.array(files),
        "normalisation": np.array("centroid at origin; outer eye corners 60->72 horizontal, "
                                  "unit inter-ocular distance; y down"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--modes", type=int, default=12)
    args = parser.parse_args()
    model = build(args.data, args.modes)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **model)
    print(f"{model['num_faces']} faces -> {args.out} ({args.out.stat().st_size} bytes); "
          f"variance explained by {args.modes} modes: "
          f"{model['variance_explained'].sum():.3f} ({np.round(model['variance_explained'], 3)})")


if __name__ == "__main__":
    main()
