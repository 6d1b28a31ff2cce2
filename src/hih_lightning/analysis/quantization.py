"""hih-quant: the NME that heatmap quantization alone costs, on real ground truth.

Why: HIH is motivated by the paper's Fig. 4 (HIH_SPEC section 1): a 64x64 heatmap read by
argmax loses 1.29 / 1.11 / 0.86 % inter-ocular NME on WFLW / 300W / COFW before any network
error. This tool measures that floor for every codec, with no network and no images (only
annotation files), so that the number behind the method's premise -- and the floor each
decoder leaves -- traces to a command.

Per face: crop box by a named protocol (:func:`~hih_lightning.data.transforms.crop_box`),
image px -> crop px with its matrix, / stride into heatmap units, ``codec.ideal_output``
(the perfect network output) -> ``codec.decode``, x stride, back to image px with the inverse
matrix, and per-image inter-ocular NME against the unquantized landmarks. NME is invariant to
the crop's scale, so image-px and crop-px NME agree; the round trip through the image frame
is what the trainer does, so any mistake in it would show here.

    hih-quant                                       # WFLW, 300W, COFW from ../shared/data
    hih-quant paths.output_dir=experiments/quantization
    hih-quant heatmap_sizes=[64] decoder_names=[argmax_round] 'protocols=[gt_box@1.0,gt_box]'
    hih-quant '+datasets.mine={benchmark:wflw,format:wflw,path:/data/my_list.txt}' \\
        dataset_names=[mine]                        # your own annotation file
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from hih_lightning.analysis.published_results import FIG4_BEST_NME, FIG4_QUANTIZATION_NME
from hih_lightning.codecs import Codec
from hih_lightning.config import CONFIG_DIR
from hih_lightning.data.formats import READERS, read_annotations, read_xywh_boxes
from hih_lightning.data.metainfo import get_meta
from hih_lightning.data.records import FaceRecord
from hih_lightning.data.transforms import (
    CROP_PROTOCOLS,
    DEFAULT_FACTORS,
    apply_to_landmarks,
    crop_box,
    crop_matrix,
    invert,
)
from hih_lightning.errors import ConfigError
from hih_lightning.metrics import per_image_nme
from hih_lightning.run_folder import hydra_cli, job_dir, user_errors

# Heatmap values rendered per chunk (16 MB of float32): bounds memory for WFLW at 128x128
# (98 x 16,384 values per face) while keeping chunks large enough to amortise Python overhead.
DEFAULT_CHUNK_ELEMENTS = 1 << 22
CodecFactory = Callable[[int], Codec]


# -- what is measured -------------------------------------------------------------------------
@dataclass(frozen=True)
class Protocol:
    """A crop protocol with its box enlargement; ``factor=None`` = the protocol default."""

    name: str
    factor: float | None = None

    @property
    def effective_factor(self) -> float:
        return DEFAULT_FACTORS[self.name] if self.factor is None else self.factor

    @property
    def label(self) -> str:
        """``gt_box x1.2``, ``gt_box x1.0``: every row says which box enlargement it used."""
        factor = f"{self.effective_factor:g}"
        return f"{self.name} x{factor if '.' in factor else factor + '.0'}"


def parse_protocol(spec: str, key: str = "protocols") -> Protocol:
    """``"gt_box"`` or ``"gt_box@1.0"`` (protocol @ box enlargement factor); a mistake is a
    :class:`ConfigError` naming the config ``key``."""
    name, _, factor = str(spec).partition("@")
    if name not in CROP_PROTOCOLS:
        raise ConfigError(f"{key}: unknown crop protocol {name!r} in {spec!r}; valid: "
                          f"{CROP_PROTOCOLS}")
    try:
        value = float(factor) if factor else None
    except ValueError:
        raise ConfigError(f"{key}: crop factor in {spec!r} is not a number") from None
    if value is not None and not value > 0:
        raise ConfigError(f"{key}: crop factor in {spec!r} must be positive")
    return Protocol(name, value)


@dataclass(frozen=True)
class QuantSource:
    """One set of ground-truth faces: an annotation file read by a registered format reader.

    ``benchmark`` names the metainfo (inter-ocular pair) and the paper's numbers it is
    compared with; ``inter_ocular`` overrides the pair for derived layouts (e.g. WFLW's
    70-point HRNet CSV). ``boxes``: an optional ``x y w h`` file, one row per face in record
    order, that supplies the ``dataset_box`` protocol where the annotation file has none.
    """

    name: str
    benchmark: str
    format: str
    path: Path
    reader_kwargs: Mapping[str, Any] = field(default_factory=dict)
    boxes: Path | None = None
    boxes_key: str = "bboxes"
    inter_ocular: tuple[int, int] | None = None
    note: str = ""

    def norm_indices(self) -> tuple[int, int]:
        return self.inter_ocular or get_meta(self.benchmark).inter_ocular


def source_from_config(name: str, node: Mapping[str, Any]) -> QuantSource:
    """A :class:`QuantSource` from a plain ``datasets.<name>`` config mapping."""
    unknown = set(node) - {f for f in QuantSource.__dataclass_fields__ if f != "name"}
    if unknown:
        raise ConfigError(f"datasets.{name}: unknown keys {sorted(unknown)}")
    for key in ("benchmark", "format", "path"):
        if not node.get(key):
            raise ConfigError(f"datasets.{name}.{key} is required")
    if node["format"] not in READERS:
        raise ConfigError(f"datasets.{name}.format: unknown annotation format "
                          f"{node['format']!r}; known: {sorted(READERS)}")
    try:
        get_meta(str(node["benchmark"]))
    except KeyError as err:
        raise ConfigError(f"datasets.{name}.benchmark: {err.args[0]}") from None
    pair = node.get("inter_ocular")
    boxes = node.get("boxes")
    return QuantSource(name=name, benchmark=str(node["benchmark"]), format=str(node["format"]),
                       path=Path(node["path"]),
                       reader_kwargs=dict(node.get("reader_kwargs") or {}),
                       boxes=Path(boxes) if boxes else None,
                       boxes_key=str(node.get("boxes_key") or "bboxes"),
                       inter_ocular=(int(pair[0]), int(pair[1])) if pair else None,
                       note=str(node.get("note") or ""))


def check_paths(sources: Iterable[QuantSource]) -> None:
    """Fail before any work when a configured file is missing (DataPathError names it)."""
    from hih_lightning.data.benchmarks import expect

    hint = "set shared_data=<folder> or datasets.<name>.path=<your file>"
    for src in sources:
        for key, path in (("path", src.path), ("boxes", src.boxes)):
            if path is not None:
                expect(path, f"datasets.{src.name}.{key}", f"{src.format} annotations"
                       if key == "path" else "x y w h boxes", hint, is_dir=path.suffix == "")


def load_records(src: QuantSource) -> list[FaceRecord]:
    """Read the faces and attach ``boxes`` (as ``FaceRecord.box``) when the source has them."""
    records = read_annotations(src.format, src.path, **src.reader_kwargs)
    if isinstance(records, tuple):  # cofw_mat also returns the images; only landmarks matter
        records = records[0]
    if not records:
        raise ConfigError(f"datasets.{src.name}: {src.path} holds no faces")
    num_points = records[0].landmarks.shape[0]
    a, b = src.norm_indices()
    if max(a, b) >= num_points:
        raise ConfigError(f"datasets.{src.name}: inter-ocular pair {(a, b)} does not fit "
                         f"{num_points} landmarks; set datasets.{src.name}.inter_ocular")
    if src.boxes is not None:
        boxes = read_xywh_boxes(src.boxes, key=src.boxes_key)
        if len(boxes) != len(records):
            raise ConfigError(f"datasets.{src.name}: {src.boxes} has {len(boxes)} boxes for "
                             f"{len(records)} faces in {src.path}")
        for record, box in zip(records, boxes, strict=True):
            record.box = box
    return records


def supports(records: Sequence[FaceRecord], protocol: Protocol) -> bool:
    """Whether every face carries what the protocol needs (a box, or a centre and scale)."""
    if protocol.name == "dataset_box":
        return all(r.box is not None for r in records)
    if protocol.name == "center_scale":
        return all(r.center is not None and r.scale is not None for r in records)
    return True


def crop_matrices(records: Sequence[FaceRecord], protocol: Protocol, input_size: int
                  ) -> np.ndarray:
    """(B, 2, 3) image px -> crop px, one per face, exactly as the data pipeline crops."""
    return np.stack([crop_matrix(*crop_box(r, protocol.name, factor=protocol.factor), input_size)
                     for r in records])


def to_crop(landmarks: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """(B, N, 2) image px -> crop px with each face's own matrix."""
    return np.stack([apply_to_landmarks(m, p) for m, p in zip(matrices, landmarks, strict=True)])


def quantize(codec: Codec, landmarks: np.ndarray, matrices: np.ndarray, input_size: int,
             chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> np.ndarray:
    """Landmarks (B, N, 2) image px after encode -> ideal output -> decode, in image px.

    Faces are processed in chunks of at most ``chunk_elements`` heatmap values, so WFLW at
    128x128 needs ~16 MB at a time instead of ~12 GB.
    """
    stride = input_size / codec.heatmap_size
    heatmap = torch.from_numpy(to_crop(landmarks, matrices)) / stride
    per_face = landmarks.shape[1] * codec.heatmap_size ** 2
    step = max(1, chunk_elements // per_face)
    out = []
    for start in range(0, len(heatmap), step):
        chunk = heatmap[start:start + step]
        decoded = codec.decode(codec.ideal_output(chunk)).landmarks.double().numpy() * stride
        out += [apply_to_landmarks(invert(m), p)
                for m, p in zip(matrices[start:start + step], decoded, strict=True)]
    return np.stack(out)


def quantization_nme(codec: Codec, landmarks: np.ndarray, matrices: np.ndarray,
                     input_size: int, norm_indices: Sequence[int],
                     chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> np.ndarray:
    """Per-image inter-ocular NME (B,), a fraction, of the codec's quantized landmarks."""
    quantized = quantize(codec, landmarks, matrices, input_size, chunk_elements)
    return per_image_nme(torch.from_numpy(quantized), torch.from_numpy(landmarks),
                         norm_indices).numpy()


def outside_fraction(landmarks: np.ndarray, matrices: np.ndarray, input_size: int) -> float:
    """Share of landmarks outside the crop: codecs clip them, so they cost more than
    quantization (it explains a protocol whose numbers jump)."""
    crop = to_crop(landmarks, matrices)
    return float(((crop < -0.5) | (crop > input_size - 0.5)).any(axis=-1).mean())


# -- the grid ---------------------------------------------------------------------------------
@dataclass
class QuantResult:
    """One cell of the grid; ``nme`` in percent, ``subsets`` = NME (%) per attribute flag."""

    dataset: str
    benchmark: str
    faces: int
    protocol: str
    factor: float
    decoder: str
    heatmap_size: int
    stride: float
    nme: float
    nme_median: float
    outside: float
    subsets: dict[str, float] = field(default_factory=dict)


def subset_nmes(errors: np.ndarray, records: Sequence[FaceRecord], benchmark: str
                ) -> dict[str, float]:
    """NME (%) per metainfo subset flag present in the records (WFLW's six, 300W's two)."""
    names = get_meta(benchmark).subsets
    flags = [r.attributes for r in records]
    if not names or any(f.size != len(names) for f in flags):
        return {}
    table = np.stack(flags).astype(bool)
    return {name: float(errors[table[:, i]].mean() * 100)
            for i, name in enumerate(names) if table[:, i].any()}


def check_grid(sources: Iterable[QuantSource], heatmap_sizes: Sequence[int],
               input_size: int) -> None:
    """What :func:`run_grid` refuses before it reads a file: a missing file
    (:func:`check_paths`), a heatmap size that does not divide the input size."""
    check_paths(sources)
    for size in heatmap_sizes:
        if input_size % int(size):
            raise ConfigError(f"heatmap_sizes: {size} does not divide input_size={input_size}")


def run_grid(sources: Sequence[QuantSource], decoders: Mapping[str, CodecFactory],
             heatmap_sizes: Sequence[int], protocols: Sequence[Protocol], input_size: int = 256,
             chunk_elements: int = DEFAULT_CHUNK_ELEMENTS, progress: bool = False
             ) -> tuple[list[QuantResult], list[str]]:
    """Every (dataset, protocol, heatmap size, decoder) cell; returns (results, skipped notes).

    A protocol a source cannot supply (no box, no centre/scale) is skipped with a note.
    """
    check_grid(sources, heatmap_sizes, input_size)
    work, skipped = [], []
    for src in sources:
        records = load_records(src)
        for protocol in protocols:
            if supports(records, protocol):
                work.append((src, records, protocol))
            else:
                skipped.append(f"{src.name}: {protocol.label} not available "
                               f"({src.path.name} supplies no {protocol.name.replace('_', ' ')})")
    results: list[QuantResult] = []
    with _Progress(len(work) * len(heatmap_sizes) * len(decoders), progress) as bar:
        for src, records, protocol in work:
            landmarks = np.stack([r.landmarks for r in records])
            matrices = crop_matrices(records, protocol, input_size)
            outside = outside_fraction(landmarks, matrices, input_size)
            for size in heatmap_sizes:
                for name, factory in decoders.items():
                    bar.describe(f"{src.name} {protocol.label} {size}x{size} {name}")
                    errors = quantization_nme(factory(int(size)), landmarks, matrices,
                                              input_size, src.norm_indices(), chunk_elements)
                    results.append(QuantResult(
                        dataset=src.name, benchmark=src.benchmark, faces=len(records),
                        protocol=protocol.name, factor=protocol.effective_factor, decoder=name,
                        heatmap_size=int(size), stride=input_size / int(size),
                        nme=float(errors.mean() * 100),
                        nme_median=float(np.median(errors) * 100), outside=outside,
                        subsets=subset_nmes(errors, records, src.benchmark)))
                    bar.advance()
    return results, skipped


class _Progress:
    """A rich progress bar over the grid cells when enabled; otherwise silent."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled, self.bar, self.task = total, enabled, None, None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import Progress

            self.bar = Progress(transient=False)
            self.bar.__enter__()
            self.task = self.bar.add_task("hih-quant", total=self.total)
        return self

    def describe(self, text: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, description=text)

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


# -- reports ----------------------------------------------------------------------------------
def _key(r: QuantResult) -> tuple[str, str, float]:
    return r.dataset, r.protocol, r.factor


def results_table(results: Sequence[QuantResult]) -> str:
    """Markdown: one row per (dataset, protocol, decoder), one column per heatmap size."""
    sizes = sorted({r.heatmap_size for r in results})
    header = ["dataset", "faces", "crop", "outside crop (%)", "decoder",
              *[f"{s}x{s} NME (%)" for s in sizes]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 5 + "---:|" * len(sizes)]
    cells = {(*_key(r), r.decoder, r.heatmap_size): r for r in results}
    rows = dict.fromkeys((*_key(r), r.decoder) for r in results)  # first-seen order
    for dataset, protocol, factor, decoder in rows:
        first = next(r for r in results if _key(r) == (dataset, protocol, factor))
        values = [cells.get((dataset, protocol, factor, decoder, s)) for s in sizes]
        lines.append("| " + " | ".join([
            dataset, str(first.faces), Protocol(protocol, factor).label,
            f"{first.outside * 100:.2f}", decoder,
            *["-" if v is None else f"{v.nme:.3f}" for v in values]]) + " |")
    return "\n".join(lines)


def paper_comparison(results: Sequence[QuantResult], decoder: str = "argmax_round",
                     heatmap_size: int = 64) -> list[dict[str, Any]]:
    """Every measured protocol of ``decoder`` at ``heatmap_size`` beside the paper's Fig. 4
    quantization NME, closest first per dataset (which crop protocol did the paper use?)."""
    rows = [{"dataset": r.dataset, "benchmark": r.benchmark, "faces": r.faces,
             "crop": Protocol(r.protocol, r.factor).label, "nme": r.nme,
             "paper": FIG4_QUANTIZATION_NME[r.benchmark],
             "difference": r.nme - FIG4_QUANTIZATION_NME[r.benchmark],
             "ratio": r.nme / FIG4_QUANTIZATION_NME[r.benchmark]}
            for r in results if r.decoder == decoder and r.heatmap_size == heatmap_size
            and r.benchmark in FIG4_QUANTIZATION_NME]
    return sorted(rows, key=lambda row: (row["dataset"], abs(row["difference"])))


def paper_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown of :func:`paper_comparison`."""
    lines = ["| dataset | faces | crop | measured NME (%) | paper Fig. 4 (%) | difference "
             "| ratio |", "|---|---:|---|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['dataset']} | {row['faces']} | {row['crop']} | {row['nme']:.3f} | "
                     f"{row['paper']:.2f} | {row['difference']:+.3f} | {row['ratio']:.3f} |")
    return "\n".join(lines)


def plot_figure4(results: Sequence[QuantResult], path: Path, protocol: Protocol,
                 decoders: Sequence[str], heatmap_size: int = 64) -> Path | None:
    """The paper's Fig. 4 re-drawn: per benchmark, the best published NME beside the paper's
    and our measured quantization NME (one bar per listed decoder); None without data."""
    from hih_lightning.analysis.plots import plot_grouped_bars

    benchmarks = [b for b in FIG4_QUANTIZATION_NME
                  if any(r.dataset == b for r in results)]
    if not benchmarks:
        return None

    def measured(benchmark: str, decoder: str) -> float | None:
        return next((r.nme for r in results if r.dataset == benchmark and r.decoder == decoder
                     and r.heatmap_size == heatmap_size and r.protocol == protocol.name
                     and math.isclose(r.factor, protocol.effective_factor)), None)

    series: dict[str, list[float | None]] = {
        "best published NME (paper Fig. 4)": [FIG4_BEST_NME[b] for b in benchmarks],
        f"quantization, paper Fig. 4 ({heatmap_size}x{heatmap_size}, argmax)":
            [FIG4_QUANTIZATION_NME[b] for b in benchmarks],
    }
    for decoder in decoders:
        series[f"quantization, measured: {decoder} ({protocol.label})"] = [
            measured(b, decoder) for b in benchmarks]
    return plot_grouped_bars([b.upper() for b in benchmarks], series, path,
                             ylabel="inter-ocular NME (%)",
                             title=f"Quantization error of {heatmap_size}x{heatmap_size} "
                                   f"heatmaps vs the best NME")


def provenance() -> dict[str, str]:
    """Commit, command and machine, so every number in the output traces to its origin."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        if git("status", "--porcelain", "--", ":/src", ":/conf"):  # paths from the top
            commit += " + uncommitted changes in src/ or conf/"
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {"command": " ".join(["hih-quant", *sys.argv[1:]]), "commit": commit,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}, "
                       f"{torch.get_num_threads()} torch threads, CPU only",
            "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def write_outputs(results: Sequence[QuantResult], skipped: Sequence[str],
                  sources: Sequence[QuantSource], out_dir: Path, figure_protocol: Protocol,
                  figure_decoders: Sequence[str], settings: Mapping[str, Any],
                  wall_seconds: float | None = None) -> dict[str, Path]:
    """quantization.{md,json} and quantization.png into ``out_dir``; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    origin = provenance()
    if wall_seconds is not None:
        origin["wall_seconds"] = f"{wall_seconds:.0f}"
    comparison = paper_comparison(results)
    paths = {"json": out_dir / "quantization.json", "markdown": out_dir / "quantization.md"}
    paths["json"].write_text(json.dumps({
        "provenance": origin, "settings": dict(settings),
        "datasets": [{**asdict(s), "path": str(s.path),
                      "boxes": None if s.boxes is None else str(s.boxes)} for s in sources],
        "skipped": list(skipped), "results": [asdict(r) for r in results],
        "paper_comparison": comparison}, indent=2))
    notes = "".join(f"- {s.name}: {s.note}\n" for s in sources if s.note)
    notes += "".join(f"- skipped: {s}\n" for s in skipped)
    timing = f"; {origin['wall_seconds']} s wall" if "wall_seconds" in origin else ""
    text = (f"# Quantization NME (inter-ocular, %), no network\n\n"
            f"`{origin['command']}` at commit {origin['commit']}; {origin['machine']}{timing}.\n"
            f"Input {settings.get('input_size')} px crops; 'outside crop' = landmarks the crop "
            f"cuts off (codecs clip them).\n\n{results_table(results)}\n")
    if comparison:
        text += ("\n## argmax (round), 64x64, against the paper's Fig. 4\n\n"
                 f"{paper_table(comparison)}\n")
    if notes:
        text += f"\n## Notes\n\n{notes}"
    paths["markdown"].write_text(text)
    figure = plot_figure4(results, out_dir / "quantization.png", figure_protocol,
                          figure_decoders)
    if figure is not None:
        paths["figure"] = figure
    return paths


# -- command line -----------------------------------------------------------------------------
def codec_factories(decoders: Mapping[str, Any], names: Sequence[str] | None = None
                    ) -> dict[str, CodecFactory]:
    """``decoders.<name>`` config nodes (``_target_`` + kwargs) -> heatmap size -> codec."""
    from hydra.utils import instantiate

    chosen = list(decoders) if names is None else list(names)
    missing = [n for n in chosen if n not in decoders]
    if missing:
        raise ConfigError(f"decoder_names: {missing} not in decoders ({sorted(decoders)})")

    def factory(node: Any) -> CodecFactory:
        return lambda size: instantiate(node, heatmap_size=size)

    return {name: factory(decoders[name]) for name in chosen}


class QuantGrid(NamedTuple):
    """What a config asks hih-quant to measure."""

    sources: list[QuantSource]
    decoders: dict[str, CodecFactory]
    protocols: list[Protocol]
    figure_protocol: Protocol


def grid_from_config(cfg: DictConfig) -> QuantGrid:
    """The config's grid with every name, size and file checked (:class:`ConfigError`,
    :class:`~hih_lightning.errors.DataPathError`). hih-quant checks the command line's config
    with it before Hydra makes a run folder, so a mistake leaves nothing behind."""
    datasets = OmegaConf.to_container(cfg.datasets, resolve=True) or {}
    names = list(cfg.dataset_names) if cfg.get("dataset_names") else list(datasets)
    missing = [n for n in names if n not in datasets]
    if missing:
        raise ConfigError(f"dataset_names: {missing} not in datasets ({sorted(datasets)})")
    sources = [source_from_config(n, datasets[n]) for n in names]
    decoders = codec_factories(cfg.decoders, list(cfg.decoder_names)
                               if cfg.get("decoder_names") else None)
    protocols = [parse_protocol(p) for p in cfg.protocols]
    check_grid(sources, list(cfg.heatmap_sizes), int(cfg.input_size))
    return QuantGrid(sources, decoders, protocols,
                     parse_protocol(cfg.figure.protocol, key="figure.protocol"))


def run(cfg: DictConfig) -> list[QuantResult]:
    """Run the configured grid and write the outputs; returns the results."""
    sources, decoders, protocols, figure_protocol = grid_from_config(cfg)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    start = time.perf_counter()
    results, skipped = run_grid(sources, decoders, [int(s) for s in cfg.heatmap_sizes],
                                protocols, int(cfg.input_size), int(cfg.chunk_elements),
                                progress=bool(cfg.progress))
    settings = {k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k])
                else cfg[k] for k in ("input_size", "heatmap_sizes", "protocols", "decoders")}
    paths = write_outputs(results, skipped, sources, Path(cfg.paths.output_dir),
                          figure_protocol, list(cfg.figure.decoders),
                          settings, wall_seconds=time.perf_counter() - start)
    print(paths["markdown"].read_text(), flush=True)
    print(f"hih-quant: wrote {', '.join(str(p) for p in paths.values())}", flush=True)
    return results


@hydra_cli("hih-quant", "quant", check=grid_from_config)
@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="quant")
def main(cfg: DictConfig) -> None:
    """``hih-quant <hydra overrides>`` (config: conf/quant.yaml); a user error (a file found
    malformed only when read) is one line, exit 2, and its run folder is removed."""
    with user_errors("hih-quant", job_dir()):
        run(cfg)


if __name__ == "__main__":
    main()
