"""hih-export: a trained model as one ONNX graph, decode included, checked with onnxruntime.

The graph takes what :class:`~hih_lightning.predict.predictor.Predictor` feeds the network,
uint8 RGB crops (B, 3, S, S) made by the benchmark crop protocol, and returns landmarks in crop
pixels (B, N, 2) and per-landmark scores (B, N): ImageNet normalisation, the network and the
codec's decode all run inside ONNX, so a user needs onnxruntime and numpy only. The batch
dimension is dynamic. The decode in the graph is the codec's own ``decode`` (the very code
PyTorch evaluation runs; its argmax, gather and arithmetic are ONNX operators), so the two
cannot drift apart; codecs whose decode has not been checked to export are refused by name.
Flip-test averaging is not part of the graph.

    hih-export ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt output=hih.onnx
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from hih_lightning.codecs import (
    ArgmaxCodec,
    HIHCodec,
    OffsetCodec,
    QuarterShiftCodec,
    RandomizedRoundingCodec,
    SimCCCodec,
    SoftArgmaxCodec,
)
from hih_lightning.codecs.gaussian import flat_argmax
from hih_lightning.codecs.hih import read_decimal_maps
from hih_lightning.config import CONFIG_DIR
from hih_lightning.module import HIHLitModule
from hih_lightning.run_folder import hydra_cli

# codecs whose decode exports to ONNX and matches PyTorch (tests/test_export.py checks each).
# Not DARK: its Newton step divides by the log-heatmap Hessian's determinant, and float
# differences between runtimes flip its validity test near zero (landmarks move by pixels).
EXPORTABLE_CODECS = (HIHCodec, ArgmaxCodec, QuarterShiftCodec, SoftArgmaxCodec, OffsetCodec,
                     SimCCCodec, RandomizedRoundingCodec)


class ExportError(RuntimeError):
    """The model cannot be exported, or the exported graph disagrees with PyTorch."""


class LandmarkGraph(nn.Module):
    """uint8 crops (B, 3, S, S) -> landmarks in crop px (B, N, 2), scores (B, N)."""

    def __init__(self, module: HIHLitModule) -> None:
        super().__init__()
        self.module = module

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        decoded = self.module.codec.decode(self.module(images))
        return decoded.landmarks * self.module.stride, decoded.scores


def check_exportable(module: HIHLitModule) -> None:
    """Refuse, naming the codec, a codec whose decode is not known to export."""
    codec = module.codec
    if type(codec) not in EXPORTABLE_CODECS:
        names = ", ".join(c.__name__ for c in EXPORTABLE_CODECS)
        raise ExportError(f"{type(codec).__name__}: its decode cannot be exported to ONNX "
                          f"(exportable codecs: {names})")


def export_onnx(module: HIHLitModule, path: str | Path, opset: int = 18) -> Path:
    """Write ``module`` (network + decode, eval mode, CPU) as an ONNX file with a dynamic batch."""
    check_exportable(module)
    module = module.cpu().eval()
    module.hparams.flip_test = False
    size = module.input_size
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sample = torch.zeros((2, 3, size, size), dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=4096)
    # their INFO lines list every graph rewrite; torch warns of each absent torchvision op
    for name in ("onnx_ir", "onnxscript", "torch.onnx._internal.exporter._registration"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            # torch's own exporter copies a pytree LeafSpec, which torch itself deprecates
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*deprecated",
                                    category=FutureWarning)
            # the wrapper in eval mode too: torch warns of a training-mode model by its top
            torch.onnx.export(LandmarkGraph(module).eval(), (sample,), str(path),
                              input_names=["image"], output_names=["landmarks", "scores"],
                              opset_version=opset, dynamic_shapes=({0: batch},), dynamo=True,
                              external_data=False, verbose=False)
    except Exception as err:  # noqa: BLE001 - the exporter raises many types
        raise ExportError(f"{type(module.codec).__name__} with the "
                          f"{getattr(module.net, 'head_type', '?')} head: export failed: "
                          f"{type(err).__name__}: {str(err).splitlines()[0]}") from err
    return path


def parity_images(size: int, count: int = 8, seed: int = 11) -> np.ndarray:
    """uint8 (count, 3, size, size) face crops from the synthetic renderer, for the check."""
    from hih_lightning.data.synthetic import SyntheticFaces

    faces = SyntheticFaces(count, image_size=size, seed=seed)
    return np.stack([faces.render(i)[0].transpose(2, 0, 1) for i in range(count)])


def _top_two_close(values: torch.Tensor, rel: float) -> torch.Tensor:
    """(..., M) -> (...): the two largest values differ by at most ``rel`` of the largest."""
    top = values.float().topk(2, dim=-1).values
    return top[..., 0] - top[..., 1] <= rel * top[..., 0].abs().clamp_min(1e-30)


@torch.no_grad()
def near_ties(module: HIHLitModule, images: torch.Tensor, rel: float = 1e-5) -> torch.Tensor:
    """(B, N) bool: landmarks whose argmax (integer heatmap, or the decimal map read at it)
    is between values equal up to float32 rounding. Which one wins depends on the order a
    runtime sums the convolutions in, so ONNX and PyTorch may both be right and differ."""
    output = module(images)
    heatmaps = output.heatmaps[:, -1]
    tied = _top_two_close(heatmaps.flatten(2), rel)
    if output.decimals is not None:
        ix, iy, _ = flat_argmax(heatmaps)
        tied |= _top_two_close(read_decimal_maps(output.decimals, ix, iy).flatten(2), rel)
    return tied


@torch.no_grad()
def check_parity(path: str | Path, module: HIHLitModule, images: np.ndarray
                 ) -> dict[str, float]:
    """|onnxruntime - PyTorch| of landmarks (crop px) and scores on ``images``, run as one
    batch and one image at a time (the dynamic batch).

    ``landmarks_max_abs_px``: over the landmarks that are not :func:`near_ties` (the number
    compared with the tolerance); ``landmarks_max_abs_px_all`` and ``near_ties``: over all.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    module = module.cpu().eval()
    batch = torch.from_numpy(images)
    want_points, want_scores = (t.numpy() for t in LandmarkGraph(module)(batch))
    points, scores = session.run(None, {"image": images})
    singles = np.concatenate([session.run(None, {"image": images[i:i + 1]})[0]
                              for i in range(len(images))])
    error = np.maximum(np.abs(points - want_points), np.abs(singles - want_points)).max(-1)
    tied = near_ties(module, batch).numpy()
    return {"landmarks_max_abs_px": float(error[~tied].max(initial=0.0)),
            "landmarks_max_abs_px_all": float(error.max()),
            "near_ties": int(tied.sum()), "landmarks": int(error.size),
            "scores_max_abs": float(np.abs(scores - want_scores).max()),
            "images": len(images)}


def run(cfg: DictConfig) -> dict[str, Any]:
    """Export the configured model; check it with onnxruntime unless ``check=false``."""
    from hih_lightning.predict.predictor import Predictor

    predictor = Predictor.from_config(cfg)
    module = predictor.module
    path = export_onnx(module, cfg.output, opset=int(cfg.opset))
    info: dict[str, Any] = {"onnx": str(path), **predictor.describe(),
                            "inputs": {"image": "uint8 (batch, 3, S, S) RGB crop"},
                            "outputs": {"landmarks": "float32 (batch, N, 2) crop px",
                                        "scores": "float32 (batch, N)"}}
    info.pop("device")
    if cfg.check:
        images = parity_images(module.input_size, int(cfg.check_images))
        info["parity"] = check_parity(path, module, images)
        worst = info["parity"]["landmarks_max_abs_px"]
        parity = info["parity"]
        print(f"hih-export: onnxruntime vs PyTorch on {len(images)} synthetic faces: max "
              f"|landmark difference| {worst:.3g} crop px ({parity['near_ties']} of "
              f"{parity['landmarks']} landmarks at a float32 tie of their argmax left out; "
              f"{parity['landmarks_max_abs_px_all']:.3g} px with them)", flush=True)
        if worst > float(cfg.tolerance):
            raise ExportError(f"{path}: landmarks differ from PyTorch by {worst:.3g} crop px "
                              f"(> tolerance {cfg.tolerance})")
    path.with_suffix(".json").write_text(json.dumps(info, indent=2))
    print(f"hih-export: wrote {path} and {path.with_suffix('.json')}", flush=True)
    return info


@hydra_cli("hih-export", "export")
@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="export")
def main(cfg: DictConfig) -> None:
    """Exit status 1 when the export or its check fails, 2 for a configuration error."""
    from hih_lightning.run_folder import job_dir, user_errors

    with user_errors("hih-export", job_dir()):
        try:
            run(cfg)
        except ExportError as err:
            print(f"hih-export: error: {err}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None


if __name__ == "__main__":
    main()
