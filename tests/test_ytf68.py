"""The YouTube Faces 68-point set (data=ytf68): the CSV reader against a real 24-frame sample
(``../shared/data/ytf68_sample``), its errors, the split by person (sha256 of the name) and
the distributed split, bad paths and images, a batch through the loader, and the Hydra
recipes (experiment=ytf68_*)."""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from hih_lightning.codecs import ArgmaxCodec, HIHCodec, OffsetCodec
from hih_lightning.config import instantiate_node
from hih_lightning.data.benchmarks import DataPathError, YTF68DataModule, identity_bucket
from hih_lightning.data.datamodules import ImageDecodeError
from hih_lightning.data.formats import AnnotationError, identity_of, read_ytf68_csv
from hih_lightning.data.transforms import warp_image
from hih_lightning.module import crop_to_image

FILES = {"training": "training_frames_keypoints.csv", "test": "test_frames_keypoints.csv"}
HEADER = [""] + [str(i) for i in range(136)]
# the six people of the sample and the frames each has in training/ + test/
PEOPLE = {"Adrian_Nastase": 4, "Cherie_Blair": 7, "Eric_Benet": 3, "Keith_Olbermann": 3,
          "Marisa_Tomei": 4, "Roberto_Benigni": 3}
# identity_bucket of each, written down once: a change of the hash (or of how its bytes are
# read) would silently reshuffle every published ytf68 split
BUCKETS = {"Adrian_Nastase": 0.6726563495779898, "Cherie_Blair": 0.5033868327214804,
           "Eric_Benet": 0.8218741297611089, "Keith_Olbermann": 0.2931248114568273,
           "Marisa_Tomei": 0.2237699325012179, "Roberto_Benigni": 0.8564589131578231}
# fractions that give every split someone on the sample: test < 0.4 <= val < 0.6 <= train
SPLIT_KW = {"test_fraction": 0.4, "val_fraction": 0.2}


@pytest.fixture(scope="session")
def sample(shared_data: Path) -> Path:
    root = shared_data / "ytf68_sample"
    if not root.is_dir():
        message = f"YouTube Faces sample not found at {root}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message} (CI=true: missing data fails the run)", pytrace=False)
        pytest.skip(message)
    return root


def _rows(path: Path) -> list[list[str]]:
    """The data rows of a keypoints CSV, read by hand with the csv module."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == HEADER
    return rows[1:]


def _copy(sample: Path, dst: Path, reverse: bool = False, skip: tuple[str, ...] = ()) -> Path:
    """A writable copy of the sample (the shared one is read-only), the CSV rows reversed if
    asked, the files named in ``skip`` (paths relative to the root) left out."""
    for src in sorted(sample.rglob("*")):
        rel = src.relative_to(sample)
        if src.is_dir() or rel.as_posix() in skip:
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        if reverse and src.suffix == ".csv":
            lines = src.read_text().splitlines()
            (dst / rel).write_text("\n".join([lines[0], *reversed(lines[1:])]) + "\n")
        else:
            shutil.copyfile(src, dst / rel)
    for folder in FILES:
        (dst / folder).mkdir(parents=True, exist_ok=True)
    return dst


def _faces(dm: YTF68DataModule, split: str) -> list[tuple[str, str]]:
    """(folder, file name) of each face of a split, in the order the module keeps them."""
    return [(r.image_path.parent.name, r.image_path.name)
            for r in dm.datasets[split].source.records]


# ------------------------------------------------------------------ the reader, real sample
@pytest.mark.parametrize("folder", sorted(FILES))
def test_reader_matches_the_csv_on_the_real_sample(sample: Path, folder: str) -> None:
    path = sample / FILES[folder]
    rows = _rows(path)
    records = read_ytf68_csv(path, image_root=sample / folder, check_images=True)
    assert len(records) == len(rows) == {"training": 16, "test": 8}[folder]
    for lineno, (row, record) in enumerate(zip(rows, records, strict=True), start=2):
        assert record.landmarks.shape == (68, 2) and record.landmarks.dtype == np.float64
        assert record.image_path == sample / folder / row[0]
        assert record.image_path.is_file()
        assert record.source == f"{path}:{lineno}"
    # one row by hand: x_i = column 2i, y_i = column 2i + 1, as written, no 1-based shift
    row = rows[2]
    expected = np.array([[float(row[1 + 2 * i]), float(row[2 + 2 * i])] for i in range(68)])
    np.testing.assert_array_equal(records[2].landmarks, expected)
    if folder == "training":  # line 4: Eric_Benet_10.jpg, read off the file
        assert row[0] == "Eric_Benet_10.jpg"
        assert records[2].landmarks[0].tolist() == [104.0, 88.0]
        assert records[2].landmarks[67].tolist() == [float(row[135]), float(row[136])]


def test_same_file_name_in_both_folders_is_two_frames(sample: Path) -> None:
    """Cherie_Blair_31.jpg is in training/ and test/ with different pixels and points."""
    train = {r.image_path.name: r for r in read_ytf68_csv(sample / FILES["training"],
                                                          sample / "training")}
    test = {r.image_path.name: r for r in read_ytf68_csv(sample / FILES["test"],
                                                         sample / "test")}
    shared = sorted(set(train) & set(test))
    assert shared == ["Cherie_Blair_31.jpg", "Eric_Benet_10.jpg", "Marisa_Tomei_41.jpg"]
    a, b = train["Cherie_Blair_31.jpg"], test["Cherie_Blair_31.jpg"]
    assert a.image_path.parent.name == "training" and b.image_path.parent.name == "test"
    assert a.landmarks[0].tolist() == [27.0, 95.0] and b.landmarks[0].tolist() == [31.0, 102.0]


def test_identity_of() -> None:
    assert identity_of("Abdel_Aziz_Al-Hakim_00.jpg") == "Abdel_Aziz_Al-Hakim"
    assert identity_of("training/Cherie_Blair_31.jpg") == "Cherie_Blair"
    assert identity_of("Keith_Olbermann_50") == "Keith_Olbermann"
    # only the trailing frame number goes: a name that ends in digits keeps them otherwise
    assert identity_of("John_Paul_II_07.jpg") == "John_Paul_II"


# ------------------------------------------------------------------ the reader, bad rows
def _row(name: str = "A_B_00.jpg", values: list[str] | None = None) -> list[str]:
    return [name, *(values or [f"{v}.0" for v in range(136)])]


def _write(path: Path, rows: list[list[str]], header: list[str] = HEADER) -> Path:
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows([header, *rows])
    return path


def test_reader_on_a_small_generated_file(tmp_path: Path) -> None:
    values = [f"{v * 0.5:g}" for v in range(136)]
    path = _write(tmp_path / "k.csv", [_row("A_B_00.jpg", values), [], _row("C_D_07.jpg")])
    records = read_ytf68_csv(path, image_root=tmp_path / "frames")
    assert [r.image_path for r in records] == [tmp_path / "frames" / "A_B_00.jpg",
                                               tmp_path / "frames" / "C_D_07.jpg"]
    assert records[0].landmarks[1].tolist() == [1.0, 1.5]  # columns 2, 3
    assert records[1].source == f"{path}:4"  # the blank line 3 is skipped but counted
    with pytest.raises(AnnotationError, match=re.escape(f"{path}:2: image not found: "
                                                        f"{tmp_path / 'frames' / 'A_B_00.jpg'}")):
        read_ytf68_csv(path, image_root=tmp_path / "frames", check_images=True)


@pytest.mark.parametrize("width", [136, 138])
def test_short_or_long_row_names_file_and_line(tmp_path: Path, width: int) -> None:
    bad = _row("C_D_01.jpg")[:width]
    if width > 137:
        bad += ["1.0"] * (width - 137)
    path = _write(tmp_path / "keypoints.csv", [_row(), _row("A_B_01.jpg"), bad])
    with pytest.raises(AnnotationError) as err:
        read_ytf68_csv(path)
    assert str(err.value).startswith(f"{path}:4: {width} columns, expected 137")


def test_non_numeric_value_names_file_line_and_column(tmp_path: Path) -> None:
    values = [f"{v}.0" for v in range(136)]
    values[41] = "n/a"  # column '41' = y20
    path = _write(tmp_path / "keypoints.csv", [_row(), _row("A_B_01.jpg", values)])
    with pytest.raises(AnnotationError) as err:
        read_ytf68_csv(path)
    assert str(err.value) == f"{path}:3: column '41' is not a number: 'n/a'"
    values[41] = "inf"
    _write(path, [_row("A_B_01.jpg", values)])
    with pytest.raises(AnnotationError, match=re.escape(f"{path}:2: column '41' is not finite")):
        read_ytf68_csv(path)


def test_wrong_header_or_empty_file_names_line_1(tmp_path: Path) -> None:
    path = _write(tmp_path / "keypoints.csv", [_row()], header=["", "x", "y"])
    with pytest.raises(AnnotationError) as err:
        read_ytf68_csv(path)
    assert str(err.value).startswith(f"{path}:1: header has 3 columns, expected 137")
    # a file without its header: the first face has 137 cells too, but it is not a header
    # (read as one, that face would be lost without a word)
    path.write_text("\n".join(",".join(row) for row in [_row(), _row("A_B_01.jpg")]) + "\n")
    with pytest.raises(AnnotationError, match=re.escape(f"{path}:1: header")):
        read_ytf68_csv(path)
    path.write_text("")
    with pytest.raises(AnnotationError, match=re.escape(f"{path}:1: empty file")):
        read_ytf68_csv(path)


# ------------------------------------------------------------------ the split by person
def test_identity_bucket_is_sha256_of_the_name() -> None:
    for name, value in BUCKETS.items():
        hexdigest = hashlib.sha256(name.encode("utf-8")).hexdigest()
        assert identity_bucket(name) == int(hexdigest[:16], 16) / 16.0**16 == value
    # non-ASCII names hash their UTF-8 bytes
    name = "Zoë_Ball"
    assert identity_bucket(name) == int.from_bytes(
        hashlib.sha256(name.encode("utf-8")).digest()[:8], "big") / 2.0**64
    assert 0.0 <= identity_bucket(name) < 1.0


def _expected_split(name: str, test_fraction: float, val_fraction: float) -> str:
    bucket = BUCKETS[name]
    if bucket < test_fraction:
        return "test"
    return "val" if bucket < test_fraction + val_fraction else "train"


def test_identity_split_on_the_real_sample(sample: Path) -> None:
    dm = YTF68DataModule(root=sample, image_size=64, num_workers=0, **SPLIT_KW)
    dm.setup("fit")
    dm.setup("test")
    people = {split: {identity_of(name) for _, name in _faces(dm, split)}
              for split in ("train", "val", "test")}
    assert people == {"train": {"Adrian_Nastase", "Eric_Benet", "Roberto_Benigni"},
                      "val": {"Cherie_Blair"}, "test": {"Keith_Olbermann", "Marisa_Tomei"}}
    for split, names in people.items():
        assert all(_expected_split(n, **SPLIT_KW) == split == dm.split_of(n) for n in names)
    # nobody in two splits, every frame of both files in exactly one, each person whole
    assert not (people["train"] & people["val"] or people["train"] & people["test"]
                or people["val"] & people["test"])
    faces = [f for split in ("train", "val", "test") for f in _faces(dm, split)]
    assert len(faces) == len(set(faces)) == 24
    for split, names in people.items():
        assert len(dm.datasets[split]) == sum(PEOPLE[n] for n in names)
    # both files feed every split: Marisa_Tomei_41.jpg from training/ and from test/
    assert ("training", "Marisa_Tomei_41.jpg") in _faces(dm, "test")
    assert ("test", "Marisa_Tomei_41.jpg") in _faces(dm, "test")
    # the order is by file name, then folder
    assert _faces(dm, "test") == sorted(_faces(dm, "test"), key=lambda f: (f[1], f[0]))


def test_identity_split_ignores_row_order(sample: Path, tmp_path: Path) -> None:
    copy = _copy(sample, tmp_path / "reversed", reverse=True)
    assert _rows(copy / FILES["training"]) == _rows(sample / FILES["training"])[::-1]
    splits = []
    for root in (sample, copy):
        dm = YTF68DataModule(root=root, image_size=64, num_workers=0, **SPLIT_KW)
        dm.setup(None)
        splits.append({split: (_faces(dm, split), [r.landmarks.tolist()
                                                   for r in dm.datasets[split].source.records])
                       for split in ("train", "val", "test")})
    assert splits[0] == splits[1]


def test_default_fractions_on_the_sample(sample: Path) -> None:
    """0.2 / 0.05: Marisa_Tomei (0.224) is val, nobody of the six is below 0.2."""
    dm = YTF68DataModule(root=sample, image_size=64, num_workers=0)
    dm.setup("fit")
    assert {identity_of(n) for _, n in _faces(dm, "val")} == {"Marisa_Tomei"}
    assert len(dm.datasets["train"]) == 24 - PEOPLE["Marisa_Tomei"]
    with pytest.raises(DataPathError, match="none of the 6 people .* falls in the test split"):
        dm.setup("test")


def test_fractions_move_people_between_splits(sample: Path) -> None:
    # test_fraction near 1: every bucket of the sample (max 0.856) is below it
    dm = YTF68DataModule(root=sample, test_fraction=0.9, val_fraction=0.05, num_workers=0)
    dm.setup("test")
    assert len(dm.datasets["test"]) == 24
    with pytest.raises(DataPathError, match="none of the 6 people .* falls in the train split"):
        dm.setup("fit")
    # just above / below Keith_Olbermann's bucket moves him alone
    for fraction, split in ((0.2932, "test"), (0.2930, "train")):
        dm = YTF68DataModule(root=sample, test_fraction=fraction, val_fraction=0.0)
        assert dm.split_of("Keith_Olbermann") == split
        assert dm.split_of("Marisa_Tomei") == "test"
        assert dm.split_of("Cherie_Blair") == "train"
    for kw in ({"test_fraction": 0.0}, {"test_fraction": 0.8, "val_fraction": 0.2},
               {"test_fraction": 0.5, "val_fraction": -0.1}):
        with pytest.raises(ValueError, match="test_fraction"):
            YTF68DataModule(root=sample, **kw)
    with pytest.raises(ValueError, match="split must be one of"):
        YTF68DataModule(root=sample, split="by_person")


def test_distributed_split_is_the_files_own(sample: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="hih_lightning.data.benchmarks"):
        dm = YTF68DataModule(root=sample, split="distributed", image_size=64, num_workers=0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "shares every person" in warnings[0]
    dm.setup(None)
    for split, folder in (("train", "training"), ("val", "test"), ("test", "test")):
        names = [row[0] for row in _rows(sample / FILES[folder])]
        assert _faces(dm, split) == [(folder, name) for name in names]
    assert dm.datasets["val"].source is dm.datasets["test"].source  # read once
    # every person of test is also in train: what the warning is about
    people = {s: {identity_of(n) for _, n in _faces(dm, s)} for s in ("train", "test")}
    assert people["test"] <= people["train"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hih_lightning.data.benchmarks"):
        YTF68DataModule(root=sample)
    assert not [r for r in caplog.records if "shares every person" in r.getMessage()]


# ------------------------------------------------------------------ wrong paths, bad images
def test_missing_root_names_the_training_csv(tmp_path: Path) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(DataPathError) as err:
        YTF68DataModule(root=root)
    assert f"expected file {root / FILES['training']}" in str(err.value)
    assert "data.root" in str(err.value)


@pytest.mark.parametrize("missing,kind", [
    (FILES["test"], "file"), (FILES["training"], "file"), ("test", "folder"),
    ("training", "folder")])
def test_missing_part_of_the_layout_is_named(sample: Path, tmp_path: Path, missing: str,
                                             kind: str) -> None:
    root = _copy(sample, tmp_path / "ytf", skip=(missing,))
    if kind == "folder":
        shutil.rmtree(root / missing)
    with pytest.raises(DataPathError, match=re.escape(f"expected {kind} {root / missing} ")):
        YTF68DataModule(root=root, split="distributed")


@pytest.mark.parametrize("split", ["identity", "distributed"])
def test_missing_frame_is_skipped_and_counted(sample: Path, tmp_path: Path, split: str) -> None:
    gone = "training/Adrian_Nastase_41.jpg"  # first of no split, so setup gets past it
    root = _copy(sample, tmp_path / "ytf", skip=(gone,))
    dm = YTF68DataModule(root=root, split=split, bad_images="skip", num_workers=0, **SPLIT_KW)
    dm.setup("fit")
    train = _faces(dm, "train")
    assert ("training", "Adrian_Nastase_41.jpg") not in train
    assert len(train) == (9 if split == "identity" else 15)
    assert list(dm.skipped_images) == ["train"] and len(dm.skipped_images["train"]) == 1
    assert dm.skipped_images["train"][0].startswith(f"{root / gone}: image missing")
    # bad_images=fail keeps the face and the loader stops at it, naming the file
    dm = YTF68DataModule(root=root, split=split, num_workers=0, **SPLIT_KW)
    dm.setup("fit")
    index = _faces(dm, "train").index(("training", "Adrian_Nastase_41.jpg"))
    with pytest.raises(ImageDecodeError, match=re.escape(f"{root / gone}: image missing")):
        dm.datasets["train"][index]
    # where a split's first frame is missing, setup itself stops, naming it and its CSV line
    first = "training/Adrian_Nastase_12.jpg" if split == "identity" \
        else "training/Cherie_Blair_22.jpg"
    (root / first).unlink()
    dm = YTF68DataModule(root=root, split=split, num_workers=0, **SPLIT_KW)
    with pytest.raises(DataPathError, match=re.escape(f"expected image {root / first} (listed "
                                                      f"in {root / FILES['training']}:")):
        dm.setup("fit")


def test_truncated_frame_is_named(sample: Path, tmp_path: Path) -> None:
    cut = "test/Cherie_Blair_20.jpg"  # a PNG despite its name
    root = _copy(sample, tmp_path / "ytf")
    data = (root / cut).read_bytes()
    assert data.startswith(b"\x89PNG")
    (root / cut).write_bytes(data[: len(data) // 2])
    dm = YTF68DataModule(root=root, split="distributed", num_workers=0)
    dm.setup("test")
    index = _faces(dm, "test").index(("test", "Cherie_Blair_20.jpg"))
    with pytest.raises(ImageDecodeError, match=re.escape(f"{root / cut}: truncated PNG")):
        dm.datasets["test"][index]
    dm.datasets["test"][index - 1 if index else index + 1]  # the others still load
    dm = YTF68DataModule(root=root, split="distributed", bad_images="skip", num_workers=0)
    dm.setup("test")
    assert len(dm.datasets["test"]) == 7
    assert dm.skipped_images["test"][0].startswith(f"{root / cut}: truncated PNG")


# ------------------------------------------------------------------ a batch
def test_test_batch_from_the_real_sample(sample: Path) -> None:
    size = 64
    dm = YTF68DataModule(root=sample, split="distributed", image_size=size, eval_batch_size=8,
                         num_workers=0)
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    assert batch["image"].shape == (8, 3, size, size) and batch["image"].dtype == torch.uint8
    assert batch["landmarks"].shape == (8, 68, 2)
    assert batch["image"].float().std() > 10  # a face, not a blank crop
    pts = batch["landmarks"].double()
    # gt_box, no augmentation: the landmark box is centred and its longer side is S / 1.2
    lo, hi = pts.amin(dim=1), pts.amax(dim=1)
    assert ((lo >= 0) & (hi <= size - 1)).all()
    torch.testing.assert_close((lo + hi) / 2, torch.full_like(lo, (size - 1) / 2),
                               rtol=0, atol=1e-4)
    torch.testing.assert_close((hi - lo).amax(dim=1), torch.full((8,), size / 1.2,
                                                                 dtype=torch.float64),
                               rtol=0, atol=1e-4)
    # landmarks_image is the CSV as written, and the crop maps back onto it
    rows = _rows(sample / FILES["test"])
    order = [rows[i][0] for i in batch["index"].tolist()]
    truth = torch.tensor([[float(v) for v in rows[i][1:]] for i in batch["index"].tolist()],
                         dtype=torch.float64).reshape(8, 68, 2)
    torch.testing.assert_close(batch["landmarks_image"], truth, rtol=0, atol=0)
    back = crop_to_image(batch["landmarks"], batch["matrix"])
    assert (back - truth).abs().max() < 1e-3
    # the RGBA frames lose their (opaque) alpha: the crop is the warp of the RGB planes
    for k, name in enumerate(order):
        bgra = cv2.imread(str(sample / "test" / name), cv2.IMREAD_UNCHANGED)
        assert bgra.shape[2] == 4 and (bgra[..., 3] == 255).all()
        rgb = np.ascontiguousarray(bgra[..., 2::-1])
        expected = warp_image(rgb, batch["matrix"][k].numpy(), size)
        assert np.array_equal(batch["image"][k].permute(1, 2, 0).numpy(), expected), name


# ------------------------------------------------------------------ Hydra
def test_train_config_builds_the_datamodule(compose_cfg, sample: Path) -> None:
    cfg = compose_cfg("experiment=ytf68_hih_local", f"data.root={sample}",
                      "data.num_workers=0", tiny=False)
    dm = instantiate_node(cfg, "data")
    assert isinstance(dm, YTF68DataModule)
    assert dm.root == sample and dm.split == "identity" and dm.image_size == 128
    assert (dm.test_fraction, dm.val_fraction) == (0.2, 0.05)
    assert dm.meta.name == "ytf68" and dm.meta.inter_ocular == (36, 45)
    assert dm.augment.scale_prob == 1.0 and dm.augment.scale_delta == 0.15
    assert dm.augment.translate_prob == 0.5 and dm.augment.rotate_deg == 30.0
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 20 and len(dm.datasets["val"]) == 4
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (16, 3, 128, 128) and batch["image"].dtype == torch.uint8
    assert torch.isfinite(batch["landmarks"]).all()
    # the default root is paths.data_dir/ytf68
    cfg = compose_cfg("experiment=ytf68_hih_local", "paths.data_dir=/nonexistent", tiny=False)
    with pytest.raises(DataPathError, match=re.escape(f"/nonexistent/ytf68/{FILES['training']}")):
        instantiate_node(cfg, "data")


@pytest.mark.parametrize("experiment,codec,head", [
    ("ytf68_hih_local", HIHCodec, "hih_local"), ("ytf68_hih", HIHCodec, "hih"),
    ("ytf68_argmax", ArgmaxCodec, None), ("ytf68_offset_map", OffsetCodec, "offset_map")])
def test_ytf68_experiments_compose(compose_cfg, experiment: str, codec: type,
                                   head: str | None) -> None:
    cfg = compose_cfg(f"experiment={experiment}", tiny=False)
    assert cfg.experiment_name == experiment
    assert cfg.data._target_ == "hih_lightning.data.benchmarks.YTF68DataModule"
    assert cfg.data.dataset == "ytf68" and cfg.data.num_landmarks == 68
    assert cfg.data.split == "identity" and cfg.model.net.num_landmarks == 68
    assert cfg.model.net.input_size == 128 and cfg.data.image_size == 128
    assert cfg.data.augment.scale_prob == 1.0 and cfg.data.augment.scale_delta == 0.15
    assert cfg.seed == 42 and cfg.trainer.max_epochs == 30
    assert cfg.model.optimizer.lr == 2.0e-3 and list(cfg.model.scheduler.milestones) == [24]
    built = instantiate(cfg.model.codec)
    assert type(built) is codec and built.heatmap_size == 32
    if head is not None:
        assert cfg.model.net.head == head
