"""COFW (Burgos-Artizzu et al., ICCV'13) 29-point annotations.

Both readers subtract 1 exactly once: COFW's ``phis`` values and lisha-chen's ``x_29`` are
MATLAB 1-based coordinates, and mmpose's ``test_cofw.json`` (0-based) equals ``x_29 - 1``.
Occlusion flags become ``FaceRecord.visible`` (True = visible); ``attributes`` is the single
COFW flag ``occluded`` (1 when any landmark is occluded).
"""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import scipy.io

from ..metainfo import COFW
from ..records import FaceRecord
from ._common import as_finite_array, resolve_image, where
from .errors import AnnotationError

NUM_POINTS = COFW.num_landmarks  # 29
MAT_KEYS: dict[str, tuple[str, str, str]] = {
    # split -> (images, boxes x y w h, shapes 29 x + 29 y + 29 occlusion)
    "train": ("IsTr", "bboxesTr", "phisTr"),
    "test": ("IsT", "bboxesT", "phisT"),
}


def _to_rgb(image: np.ndarray, loc: str) -> np.ndarray:
    """HxW or HxWx3 uint8 -> contiguous HxWx3 uint8 RGB (grey images are replicated)."""
    if image.dtype != np.uint8:
        raise AnnotationError(f"{loc}: image must be uint8, got {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise AnnotationError(f"{loc}: image must be HxW or HxWx3, got shape {image.shape}")
    return np.ascontiguousarray(image)


def _load_hdf5(path: Path, keys: tuple[str, str, str]
               ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """MATLAB v7.3: every array is stored transposed; the cell holds object references."""
    img_key, box_key, phi_key = keys
    with h5py.File(path, "r") as f:
        for key in keys:
            if key not in f:
                raise AnnotationError(f"{where(path, key)}: missing; found {sorted(f.keys())}")
        refs = f[img_key][()]
        if refs.dtype != h5py.ref_dtype:
            raise AnnotationError(f"{where(path, img_key)}: expected a cell array of images "
                                  f"(object references), got dtype {refs.dtype}")
        images = []
        for i, ref in enumerate(refs.ravel()):  # C order of the transposed = MATLAB order
            if not ref:
                raise AnnotationError(f"{where(path, f'{img_key}[{i}]')}: null reference")
            images.append(_to_rgb(np.asarray(f[ref][()]).T, where(path, f"{img_key}[{i}]")))
        boxes = np.asarray(f[box_key][()]).T
        phis = np.asarray(f[phi_key][()]).T
    return images, boxes, phis


def _load_v5(path: Path, keys: tuple[str, str, str]
             ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    img_key, box_key, phi_key = keys
    mat = scipy.io.loadmat(path)
    for key in keys:
        if key not in mat:
            found = sorted(k for k in mat if not k.startswith("__"))
            raise AnnotationError(f"{where(path, key)}: missing; found {found}")
    cells = mat[img_key]
    images = [_to_rgb(np.asarray(im), where(path, f"{img_key}[{i}]"))
              for i, im in enumerate(cells.ravel(order="F"))]
    return images, np.asarray(mat[box_key]), np.asarray(mat[phi_key])


def read_cofw_mat(path: Path | str, split: str = "test"
                  ) -> tuple[list[FaceRecord], list[np.ndarray]]:
    """Read the official ``COFW_{train,test}_color.mat`` (v7.3/HDF5; v5 also accepted).

    Returns ``(records, images)``: the images live inside the .mat, so every record has
    ``image_path=None`` and ``images[i]`` is face *i*'s HxWx3 uint8 RGB array. Keys:
    ``IsT``/``IsTr`` images, ``bboxesT``/``bboxesTr`` boxes ``x y w h`` (1-based),
    ``phisT``/``phisTr`` 87 columns = 29 x, 29 y, 29 occlusion flags (1 = occluded).
    Landmarks and boxes get -1; ``box`` is ``(x-1, y-1, x-1+w, y-1+h)``.
    """
    path = Path(path)
    if split not in MAT_KEYS:
        raise ValueError(f"unknown COFW split {split!r}; known: {sorted(MAT_KEYS)}")
    keys = MAT_KEYS[split]
    loader = _load_hdf5 if h5py.is_hdf5(path) else _load_v5
    images, boxes, phis = loader(path, keys)
    _, box_key, phi_key = keys
    phis = as_finite_array(phis, where(path, phi_key), "shape")
    boxes = as_finite_array(boxes, where(path, box_key), "box")
    if phis.ndim != 2 or phis.shape[1] != 3 * NUM_POINTS:
        raise AnnotationError(f"{where(path, phi_key)}: expected (faces, {3 * NUM_POINTS}) "
                              f"after MATLAB transpose, got {phis.shape}")
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise AnnotationError(f"{where(path, box_key)}: expected (faces, 4) x y w h, "
                              f"got {boxes.shape}")
    if not len(images) == len(boxes) == len(phis):
        raise AnnotationError(f"{where(path, phi_key)}: {len(images)} images, {len(boxes)} "
                              f"boxes and {len(phis)} shapes; they must match")
    records = []
    for i, (phi, (x, y, w, h)) in enumerate(zip(phis, boxes, strict=True)):
        loc = where(path, f"{phi_key}[{i}]")
        occluded = phi[2 * NUM_POINTS:]
        if not np.isin(occluded, (0, 1)).all():
            raise AnnotationError(f"{loc}: occlusion flags (columns 58-86) must be 0 or 1")
        landmarks = np.stack([phi[:NUM_POINTS], phi[NUM_POINTS:2 * NUM_POINTS]], axis=1) - 1.0
        records.append(FaceRecord(
            image_path=None, landmarks=landmarks,
            box=np.array([x - 1.0, y - 1.0, x - 1.0 + w, y - 1.0 + h]),
            attributes=np.array([int(occluded.any())], dtype=np.int64),
            visible=occluded == 0, source=loc))
    return records, images


_IMAGENAME = re.compile(r"(?:.*/)?(\d+)\.jpg$")


def read_cofw_507_mat(path: Path | str, image_root: Path | str | None = None,
                      check_images: bool = False) -> list[FaceRecord]:
    """Read lisha-chen's ``COFW_test_507.mat`` (v5 struct array ``COFW_test``), 29 points.

    The struct is stored in lexicographic ``imagename`` order (images/1.jpg, images/10.jpg,
    images/100.jpg, ...); records are returned in official COFW test order instead, so
    ``records[k - 1]`` is COFW test face *k* (= ``images/<k>.jpg``). Landmarks = ``x_29 - 1``;
    ``visible`` = ``vis_29 == 1``. Image paths are ``image_root / imagename``.
    """
    path = Path(path)
    mat = scipy.io.loadmat(path)
    if "COFW_test" not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise AnnotationError(f"{where(path, 'COFW_test')}: missing; found {found}")
    struct = mat["COFW_test"].ravel()
    needed = ("imagename", "x_29", "vis_29")
    names = struct.dtype.names or ()
    for field_name in needed:
        if field_name not in names:
            raise AnnotationError(f"{where(path, 'COFW_test')}: no field {field_name!r}; "
                                  f"has {list(names)}")
    by_index: dict[int, FaceRecord] = {}
    for j, entry in enumerate(struct):
        loc = where(path, f"COFW_test[{j}]")
        name_arr = np.asarray(entry["imagename"]).ravel()
        name = str(name_arr[0]) if name_arr.size == 1 else ""
        match = _IMAGENAME.match(name)
        if match is None:
            raise AnnotationError(f"{loc}: imagename must be 'images/<k>.jpg', got {name!r}")
        k = int(match.group(1))
        if k in by_index:
            raise AnnotationError(f"{loc}: duplicate image {name!r} "
                                  f"(also {by_index[k].source})")
        points = as_finite_array(entry["x_29"], loc, "x_29")
        if points.shape != (NUM_POINTS, 2):
            raise AnnotationError(f"{loc}: x_29 must be ({NUM_POINTS}, 2), got {points.shape}")
        vis = np.asarray(entry["vis_29"]).ravel()
        if vis.shape != (NUM_POINTS,) or not np.isin(vis, (0, 1)).all():
            raise AnnotationError(f"{loc}: vis_29 must be {NUM_POINTS} flags of 0/1, "
                                  f"got shape {vis.shape}")
        visible = vis == 1
        by_index[k] = FaceRecord(
            image_path=resolve_image(name, image_root, loc, check_images),
            landmarks=points - 1.0,
            attributes=np.array([int(not visible.all())], dtype=np.int64),
            visible=visible, source=loc)
    return [by_index[k] for k in sorted(by_index)]
