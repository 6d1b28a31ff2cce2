"""Training images/s of the real HIH training step per mode, each with its ratio to eager fp32.

The step timed is the real one: ``HIHLitModule.training_step`` (uint8 -> normalised input,
forward, codec encode on the device, loss) + backward + the configured optimizer's step, of
the model node of a real experiment config (Hydra compose -> ``instantiate_node``), on
synthetic uint8 batches already in memory. Warm-up steps (compilation included) are excluded;
each row reports the median step of ``--steps`` timed ones (CUDA events on a GPU, so the
queue stays full as in training). Modes combine, with ``+``:

- ``fp32``: eager, NCHW (the reference row of each batch size);
- ``cl``: ``model.channels_last=true``;
- ``bf16``: bf16 autocast around the step, as ``trainer.precision=bf16-mixed`` does (Lightning's
  own MixedPrecision plugin: ``torch.autocast("cpu"|"cuda", dtype=torch.bfloat16)``);
- ``compile``: ``model.compile=true`` (inductor; gcc on CPU);
- ``graphs``: ``model.compile=true model.compile_mode=reduce-overhead`` (CUDA graphs; GPU only).

Each mode is also run (unless ``--no-trainer``) inside ``lightning.Trainer.fit`` from the
experiment's trainer config (progress bar, log interval, precision) on the same in-memory
batch: the difference is Lightning's per-step cost. The training DataLoader is timed alone
(``--loader-batches``), as the limit the loader puts on a real run. Projections: the published
WFLW recipe (60 epochs x 7,500 images) and the main job (its config's faces x epochs), from the
Trainer rate where measured, at the row's batch size (both recipes use batch 16).

    python benchmarks/bench_train.py                          # CPU: hih_cpu, 128 px
    python benchmarks/bench_train.py --input 64               # the ablation budget's 64 px
    python benchmarks/bench_train.py --device cuda            # GPU: wflw_hih_b (256 px)
    python benchmarks/bench_train.py --steps 2 --batch 2 --input 64 --loader-batches 2
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch.plugins.precision import MixedPrecision
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_data import make_images  # noqa: E402

from hih_lightning.allocator import keep_freed_memory  # noqa: E402
from hih_lightning.config import CONFIG_DIR, instantiate_node  # noqa: E402

PARTS = ("fp32", "cl", "bf16", "compile", "graphs")
DEFAULT_MODES = {"cpu": "fp32,cl,bf16,bf16+cl,compile",
                 "cuda": "fp32,cl,bf16,bf16+cl,compile,graphs,bf16+cl+graphs"}
DEFAULT_EXPERIMENT = {"cpu": "synthetic_hih", "cuda": "wflw_hih_b"}
WFLW_IMAGES = 60 * 7_500   # the published recipe: 60 epochs of the 7,500 training faces


@dataclass(frozen=True)
class Mode:
    name: str
    channels_last: bool = False
    bf16: bool = False
    compile: bool = False
    graphs: bool = False

    @classmethod
    def parse(cls, name: str) -> Mode:
        parts = set(name.split("+"))
        if not parts <= set(PARTS):
            raise SystemExit(f"bench_train: unknown mode part(s) {sorted(parts - set(PARTS))} "
                             f"in {name!r}; parts: {', '.join(PARTS)}")
        return cls(name, "cl" in parts, "bf16" in parts, "compile" in parts or "graphs" in parts,
                   "graphs" in parts)

    def overrides(self) -> list[str]:
        out = [f"model.channels_last={self.channels_last}", f"model.compile={self.compile}"]
        if self.graphs:
            out.append("model.compile_mode=reduce-overhead")
        return out


# -- the machine --------------------------------------------------------------------------
def cpu_description() -> str:
    """CPU model, the bf16-relevant ISA flags, torch's kernel ISA and the thread count."""
    name, flags = platform.processor() or "unknown CPU", set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    isa = " ".join(f"{f}={'yes' if f in flags else 'no'}"
                   for f in ("avx512_bf16", "amx_bf16", "avx512f", "avx2"))
    return (f"CPU: {name} ({os.cpu_count()} logical CPUs); {isa}; torch CPU capability "
            f"{torch.backends.cpu.get_cpu_capability()}; {torch.get_num_threads()} threads")


_ONEDNN_ISA: dict[str, str] = {}


def onednn_conv_kernels(mode: Mode) -> str:
    """Which oneDNN implementation runs a 3x3 conv's forward and backward in ``mode`` (CPU).

    Read from oneDNN's verbose log (written to file descriptor 1 by the C++ library);
    "ATen" when the conv did not go through oneDNN at all (e.g. bf16 without AVX512/AMX).
    """
    conv = torch.nn.Conv2d(64, 64, 3, padding=1)
    x = torch.randn(2, 64, 32, 32, requires_grad=True)
    if mode.channels_last:
        conv = conv.to(memory_format=torch.channels_last)
        x = x.detach().to(memory_format=torch.channels_last).requires_grad_()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode.bf16)
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile(mode="w+") as log:
        os.dup2(log.fileno(), 1)
        try:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                with autocast:
                    y = conv(x)
                y.float().sum().backward()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        log.seek(0)
        lines = log.read().splitlines()
    isa = _ONEDNN_ISA.setdefault("isa", next(  # oneDNN logs its ISA once per process
        (ln.split("isa:")[1] for ln in lines if "isa:" in ln), "?"))
    impls = sorted({ln.split(",")[6] for ln in lines
                    if ",exec,cpu,convolution," in ln and len(ln.split(",")) > 6})
    return f"{', '.join(impls) or 'ATen (not oneDNN)'} (oneDNN ISA: {isa.strip()})"


# -- building and timing -------------------------------------------------------------------
def compose_cfg(experiment: str, device: str, input_size: int | None, out: Path,
                extra: Sequence[str] = ()):
    overrides = [f"experiment={experiment}", "logger=csv", f"paths.log_dir={out}",
                 f"paths.output_dir={out / 'run'}", *extra]
    if device == "cuda":
        overrides.append("trainer=gpu")
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
        if input_size is not None:  # the decimal map must fit: k <= input / 16
            decimal = min(int(cfg.model.net.decimal_size), max(1, input_size // 16))
            cfg = compose("train", overrides=overrides + [
                f"model.net.input_size={input_size}", f"model.net.decimal_size={decimal}"])
    return cfg


def build_model(cfg, mode: Mode, device: str):
    """The experiment's HIHLitModule with the mode's config overrides, seeded, on ``device``."""
    torch.manual_seed(0)
    mode_cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(mode.overrides()))
    model = instantiate_node(mode_cfg, "model").to(device)
    model.train()
    return model, mode_cfg


def synthetic_batch(model, batch: int, landmarks: int, device: str) -> dict[str, torch.Tensor]:
    size = model.input_size
    gen = torch.Generator().manual_seed(0)
    return {"image": torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8,
                                   generator=gen).to(device),
            "landmarks": (torch.rand(batch, landmarks, 2, generator=gen) * (size - 1)).to(device)}


def precision_context(mode: Mode, device: str):
    if not mode.bf16:
        return contextlib.nullcontext()
    return MixedPrecision("bf16-mixed", device).forward_context()


class Clock:
    """Step boundaries: CUDA events on a GPU (no host sync between steps), else wall time."""

    def __init__(self, device: str) -> None:
        self.cuda = device == "cuda"
        self.marks: list = []

    def mark(self) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def intervals(self) -> list[float]:
        pairs = zip(self.marks, self.marks[1:], strict=False)
        if self.cuda:
            torch.cuda.synchronize()
            return [a.elapsed_time(b) / 1e3 for a, b in pairs]
        return [b - a for a, b in pairs]


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_step(cfg, mode: Mode, batch: int, steps: int, warmup: int, device: str
              ) -> tuple[float, float, float]:
    """(median step seconds, warm-up seconds, peak GPU GiB) of the bare training step."""
    model, _ = build_model(cfg, mode, device)
    model.log_dict = lambda *args, **kwargs: None  # no trainer attached
    optimizer = model.configure_optimizers()["optimizer"]
    data = synthetic_batch(model, batch, int(cfg.data.num_landmarks), device)

    def step() -> None:
        if mode.graphs:
            torch.compiler.cudagraph_mark_step_begin()
        optimizer.zero_grad(set_to_none=True)
        with precision_context(mode, device):
            loss = model.training_step(data, 0)
        loss.backward()
        optimizer.step()

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(warmup):
        step()
    synchronize(device)
    warm = time.perf_counter() - start
    clock = Clock(device)
    clock.mark()
    for _ in range(steps):
        step()
        clock.mark()
    seconds = statistics.median(clock.intervals())
    memory = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else 0.0
    return seconds, warm, memory


class _Repeat(torch.utils.data.Dataset):
    """The same collated batch ``n`` times (a DataLoader with batch_size=None)."""

    def __init__(self, batch: dict[str, torch.Tensor], n: int) -> None:
        self.batch, self.n = batch, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.batch


class _StepTimer(L.Callback):
    def __init__(self, warmup: int, device: str) -> None:
        self.warmup, self.clock = warmup, Clock(device)

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if batch_idx >= self.warmup:
            self.clock.mark()

    def on_train_end(self, trainer, module) -> None:
        self.clock.mark()


def time_in_trainer(cfg, mode: Mode, batch: int, steps: int, warmup: int, device: str,
                    devnull) -> float:
    """Median step seconds of the same step run by ``Trainer.fit`` from the experiment's
    trainer config (its log interval, CSV logger, progress bar, LR monitor; no checkpoints,
    no validation), on one device."""
    model, mode_cfg = build_model(cfg, mode, device)
    callbacks = []
    for name, node in (mode_cfg.get("callbacks") or {}).items():
        if node is None or name in ("model_checkpoint", "model_summary"):
            continue
        if "RichProgressBar" in str(node.get("_target_")):  # drawn as on a terminal, unseen
            callbacks.append(instantiate_node(mode_cfg, f"callbacks.{name}", console_kwargs={
                "file": devnull, "force_terminal": True}))
        else:
            callbacks.append(instantiate_node(mode_cfg, f"callbacks.{name}"))
    loggers = [instantiate_node(mode_cfg, f"logger.{name}")
               for name, node in (mode_cfg.get("logger") or {}).items() if node is not None]
    timer = _StepTimer(warmup, device)
    trainer = instantiate_node(
        mode_cfg, "trainer", callbacks=[*callbacks, timer], logger=loggers or False,
        precision="bf16-mixed" if mode.bf16 else "32-true", max_steps=warmup + steps,
        max_epochs=-1, limit_val_batches=0, enable_checkpointing=False,
        num_sanity_val_steps=0, devices=1, strategy="auto", sync_batchnorm=False,
        enable_model_summary=False)
    data = synthetic_batch(model, batch, int(cfg.data.num_landmarks), "cpu")
    if device == "cuda":  # as the real loaders deliver it (pin_memory=True)
        data = {k: v.pin_memory() for k, v in data.items()}
    loader = torch.utils.data.DataLoader(_Repeat(data, warmup + steps), batch_size=None)
    trainer.fit(model, train_dataloaders=loader)
    return statistics.median(timer.clock.intervals())


def make_wflw_tree(root: Path, unique: int, faces: int) -> Path:
    """A WFLW tree whose train list repeats ``unique`` generated faces up to ``faces`` lines."""
    make_images(root, unique, 1024, 768)
    lst = root / "WFLW_annotations" / "list_98pt_rect_attr_train_test"
    lines = (lst / "list_98pt_rect_attr_train.txt").read_text().splitlines()
    (lst / "list_98pt_rect_attr_train.txt").write_text(
        "\n".join(lines[i % len(lines)] for i in range(faces)))
    return root


def time_loader(cfg, batches: int, workers: int | None, tmp: Path) -> tuple[float, int]:
    """(images/s, workers) of the experiment's training DataLoader alone (decode, crop,
    augment, collate); WFLW reads a generated tree of 1024x768 JPEGs."""
    extra: dict = {"data": {}}
    if workers is not None:
        extra["data"]["num_workers"] = workers
    if "WFLW" in str(cfg.data._target_):
        extra["data"]["root"] = str(make_wflw_tree(tmp / "WFLW", 256, 4096))
    cfg = OmegaConf.merge(cfg, extra)
    datamodule = instantiate_node(cfg, "data")
    datamodule.setup("fit")
    loader = iter(datamodule.train_dataloader())
    next(loader)  # workers started
    start, images = time.perf_counter(), 0
    for _ in range(batches):
        images += len(next(loader)["image"])
    return images / (time.perf_counter() - start), int(cfg.data.num_workers)


def duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.1f} min"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--experiment", default=None,
                        help="config whose model is timed (default: synthetic_hih on CPU, "
                             "wflw_hih_b on a GPU)")
    parser.add_argument("--input", type=int, default=None,
                        help="input size override, e.g. 64 (the ablation budget)")
    parser.add_argument("--modes", default=None, help="comma-separated; parts: "
                        + ", ".join(PARTS) + " joined with +")
    parser.add_argument("--batch", default="16,64", help="comma-separated batch sizes")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per row "
                        "(default 10 on CPU, 30 on a GPU)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per row")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--no-trainer", dest="trainer", action="store_false",
                        help="skip the rows' Trainer.fit timing")
    parser.add_argument("--loader-batches", type=int, default=20, help="0: skip the loader")
    parser.add_argument("--workers", type=int, default=None,
                        help="loader processes (default: the experiment's)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds: skip rows that would start later (default 420 on a GPU)")
    parser.add_argument("--cudnn-benchmark", action="store_true",
                        help="torch.backends.cudnn.benchmark=True (hih-train leaves it off)")
    args = parser.parse_args()

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_train: no CUDA GPU visible")
    experiment = args.experiment or DEFAULT_EXPERIMENT[device]
    for name in ("lightning.pytorch", "lightning.fabric"):  # tips and device lines per fit
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*(log_every_n_steps|LeafSpec|does not have "
                            "many workers|no `val_dataloader`|exists and is not empty).*")
    with tempfile.TemporaryDirectory() as tmp, open(os.devnull, "w") as devnull:
        run(args, device, experiment, Path(tmp), devnull)


def run(args: argparse.Namespace, device: str, experiment: str, tmp: Path, devnull) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    kept = keep_freed_memory()  # as hih-train does
    steps = args.steps or (30 if device == "cuda" else 10)
    budget = args.budget or (420.0 if device == "cuda" else float("inf"))
    modes = [Mode.parse(m) for m in (args.modes or DEFAULT_MODES[device]).split(",")]
    if modes[0].name != "fp32":
        modes = [Mode.parse("fp32"), *[m for m in modes if m.name != "fp32"]]
    batches = [int(b) for b in args.batch.split(",")]
    cfg = compose_cfg(experiment, device, args.input, tmp)
    net = cfg.model.net
    main_job = compose_cfg("synthetic_hih", "cpu", None, tmp)
    main_job_images = main_job.data.train_size * main_job.trainer.max_epochs

    begun = time.perf_counter()
    print(f"\n{cpu_description()}")
    if device == "cuda":
        print(f"GPU: {torch.cuda.get_device_name()}; cudnn.benchmark={args.cudnn_benchmark}")
    else:
        for mode in modes:
            if not mode.compile:
                print(f"  conv kernels, {mode.name}: {onednn_conv_kernels(mode)}")
    print(f"torch {torch.__version__}, lightning {L.__version__}; experiment={experiment}: "
          f"{net.variant} {net.input_size} px, decimal {net.decimal_size}, "
          f"{cfg.data.num_landmarks} landmarks, {device}; median of {steps} steps after "
          f"{args.warmup} warm-up steps; freed buffers kept by malloc: {kept}\n")
    trainer_col = " | in Trainer img/s | Trainer ms/step" if args.trainer else ""
    print(f"| mode | batch | ms/step | images/s | vs fp32 | warm-up s{trainer_col} "
          f"| WFLW 60 ep | main job |" + (" peak GiB |" if device == "cuda" else ""))
    print("|---" * (8 + 2 * args.trainer + (device == "cuda")) + "|", flush=True)
    best, compile_seconds = 0.0, 0.0
    for batch in batches:
        base = None
        for mode in modes:
            if mode.graphs and device != "cuda":
                print(f"| {mode.name} | {batch} | CUDA graphs need a GPU |")
                continue
            expected = compile_seconds if mode.compile else 0.0  # the last compile's cost
            if time.perf_counter() - begun + expected > budget:
                print(f"| {mode.name} | {batch} | skipped: over --budget {budget:.0f} s |")
                continue
            if mode.compile:
                torch._dynamo.reset()  # compile for this batch size alone (static shapes)
            try:
                seconds, warm, memory = time_step(cfg, mode, batch, steps, args.warmup, device)
                in_trainer = (time_in_trainer(cfg, mode, batch, steps, args.warmup, device,
                                              devnull) if args.trainer else None)
            except Exception as err:  # noqa: BLE001 - one failing mode must not stop the table
                print(f"| {mode.name} | {batch} | failed: {type(err).__name__}: "
                      f"{str(err).splitlines()[0][:150]} |", flush=True)
                continue
            if mode.compile:
                compile_seconds = warm
            rate = batch / seconds
            base = base or rate
            real = batch / in_trainer if in_trainer else rate
            best = max(best, real)
            cols = [mode.name, batch, f"{seconds * 1e3:.1f}", f"{rate:.1f}",
                    f"{rate / base:.2f}x", f"{warm:.1f}"]
            if args.trainer:
                cols += [f"{real:.1f}", f"{in_trainer * 1e3:.1f}"]
            cols += [duration(WFLW_IMAGES / real), duration(main_job_images / real)]
            if device == "cuda":
                cols.append(f"{memory:.2f}")
            print("| " + " | ".join(map(str, cols)) + " |", flush=True)
    print("\nProjections: images / (Trainer rate where measured, else step rate) at the row's "
          "batch; both recipes use batch 16; loader, validation and test excluded.")
    if args.loader_batches > 0:
        rate, workers = time_loader(cfg, args.loader_batches, args.workers, tmp)
        limit = "limits" if rate < best else "does not limit"
        print(f"Loader alone ({workers} workers, batch {cfg.data.batch_size}): {rate:.0f} "
              f"images/s: it {limit} the best rate above ({best:.0f}).")
    print(f"Total {time.perf_counter() - begun:.0f} s.")


if __name__ == "__main__":
    main()
