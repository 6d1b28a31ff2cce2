"""Landmarks on any photo: face box -> benchmark crop -> network -> landmarks in image pixels.

The network runs on exactly what it was trained and tested on: a square crop of side
``crop_factor`` x the box's longer side, centred on the box (the ``dataset_box`` protocol of
:mod:`hih_lightning.data.transforms`), resampled by the same affine warp. Boxes come from the
caller (a box file) or from dlib's HOG face detector; a detector box covers brow to mouth,
so it is first moved onto the landmark box it predicts (``box_scale``, ``box_shift``, see
:func:`detector_to_landmark_box`). The
points come back through the inverse of the crop's affine (``module.crop_to_image``), the
one way from crop to image pixels that evaluation uses too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hih_lightning.checkpoints import load_checkpoint
from hih_lightning.config import ConfigError, resolve_ckpt_path
from hih_lightning.data.transforms import crop_box, crop_matrix, warp_image
from hih_lightning.module import HIHLitModule, crop_to_image
from hih_lightning.run_folder import SAVED_CONFIG, run_dir_of


@dataclass
class Face:
    """One face: its box (x1, y1, x2, y2), the crop (cx, cy, side) it was read from, and the
    landmarks (N, 2) and their scores (N,), all in image pixels of the image it came from."""

    box: np.ndarray
    crop: np.ndarray
    landmarks: np.ndarray
    scores: np.ndarray
    box_source: str  # "detector" or "file"

    def to_json(self) -> dict[str, Any]:
        return {"box": [round(float(v), 2) for v in self.box],
                "box_source": self.box_source,
                "crop": [round(float(v), 2) for v in self.crop],
                "landmarks": np.round(self.landmarks, 3).tolist(),
                "scores": np.round(self.scores, 4).tolist()}


@dataclass
class NetworkInput:
    """Faces as the network takes them, and the way back to the pixels of their images.

    ``images``: uint8 RGB crops (B, 3, S, S), the input of the network and of the graph
    ``hih-export`` writes; ``matrices``: (B, 2, 3) image px -> crop px of each crop;
    ``boxes``: (B, 4) the boxes as given or detected; ``squares``: (B, 3) the crop squares
    (cx, cy, side); ``owners``: (B,) the index of each face's image; ``sources``: "detector"
    or "file" per face.
    """

    images: np.ndarray
    matrices: np.ndarray
    boxes: np.ndarray
    squares: np.ndarray
    owners: np.ndarray
    sources: list[str]

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """Landmarks (B, N, 2) in crop px (what the network or graph returns) -> image px."""
        return crop_to_image(torch.as_tensor(np.asarray(points)),
                             torch.from_numpy(self.matrices)).numpy()


# detector kind -> (box_scale, box_shift) of :func:`detector_to_landmark_box` by default.
# hog: fitted on the 3,228 training faces of the YouTube Faces 68-point set
# (experiments/real_faces); on the annotated photos of shared/data its crops match the
# benchmark's as well as a leave-one-out fit there does (experiments/face_detectors).
DETECTOR_BOX: dict[str, tuple[float, float]] = {"hog": (0.973, 0.112)}


def detector_to_landmark_box(boxes: np.ndarray, scale: float, shift: float) -> np.ndarray:
    """Detector boxes (K, 4) -> the landmark boxes they predict: same centre x, centre moved
    down by ``shift`` x the box side, side x ``scale``.

    A detector box is brow to mouth and the crop protocol wants chin to brow: without the
    move, every crop sits too high (``DETECTOR_BOX`` has each detector's measured values).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2 + shift * side
    half = scale * side / 2
    return np.stack([cx - half, cy - half, cx + half, cy + half], axis=1)


def run_config_path(checkpoint: str | Path) -> Path:
    """The saved Hydra config of the run a checkpoint belongs to (``<run>/checkpoints/x.ckpt``
    beside ``<run>/.hydra/config.yaml``), naming where it looked when there is none."""
    run_dir = run_dir_of(checkpoint)
    if run_dir is None:
        checkpoint = Path(checkpoint).resolve()
        looked = " or ".join(str(parent / SAVED_CONFIG) for parent in checkpoint.parents[:2])
        raise ConfigError(f"{checkpoint}: no run config at {looked}; give the run's config.yaml "
                          "(run_config=<file>)")
    return run_dir / SAVED_CONFIG


def choose_device(device: str) -> torch.device:
    """``auto``: the GPU when there is one, else the CPU. A device this machine lacks is a
    :class:`ConfigError` naming it, not torch's assertion at the first tensor sent there."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as err:
        raise ConfigError(f"device={device}: {err} (device=auto, cpu, cuda or cuda:N)") from None
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if chosen.type == "cuda" and (chosen.index or 0) >= count:
        raise ConfigError(f"device={device}: this machine has {count} CUDA device(s) "
                          "(device=auto takes the GPU when there is one)")
    return chosen


class Predictor:
    """A trained HIH model that maps (image, face boxes) to landmarks in image pixels.

    >>> predictor = Predictor.from_checkpoint("logs/train/runs/<run>/checkpoints/last.ckpt")
    >>> faces = predictor.predict(rgb_image)             # boxes from the face detector
    >>> faces = predictor.predict(rgb_image, [[x1, y1, x2, y2]])
    >>> batch = predictor.network_input([rgb_image])     # crops for an ONNX graph, and back

    ``module`` is the LightningModule (network + codec); ``crop_factor`` the crop protocol's
    enlargement of the box; ``flip_test`` averages with the mirrored crop (scores are those
    of the unmirrored pass); ``detector`` options go to :class:`~.hog.HOGFaceDetector`, except
    ``box_scale`` and ``box_shift`` (:func:`detector_to_landmark_box`).
    """

    def __init__(self, module: HIHLitModule, crop_factor: float = 1.2, batch_size: int = 16,
                 device: str = "auto", flip_test: bool = False,
                 detector: dict[str, Any] | None = None, source: str = "") -> None:
        self.device = choose_device(device)
        self.module = module.to(self.device).eval()
        self.module.hparams.flip_test = bool(flip_test)
        self._set_options(crop_factor, batch_size, detector, source)

    def _set_options(self, crop_factor: float, batch_size: int,
                     detector: dict[str, Any] | None, source: str) -> None:
        """Crop protocol, batch size and detector settings: the same for every backend."""
        self.crop_factor, self.batch_size = float(crop_factor), int(batch_size)
        self.detector_options = dict(detector or {})
        self.detector_kind = str(self.detector_options.pop("kind", "hog"))
        if self.detector_kind not in DETECTOR_BOX:
            raise ConfigError(f"detector.kind={self.detector_kind!r}; "
                              f"valid: {sorted(DETECTOR_BOX)}")
        scale, shift = DETECTOR_BOX[self.detector_kind]
        box_scale = self.detector_options.pop("box_scale", None)
        box_shift = self.detector_options.pop("box_shift", None)
        self.box_scale = scale if box_scale is None else float(box_scale)
        self.box_shift = shift if box_shift is None else float(box_shift)
        # the kind's own options (detector.hog); flat options are the kind's too
        options = self.detector_options.pop(self.detector_kind, None) or {}
        for kind in DETECTOR_BOX:
            self.detector_options.pop(kind, None)
        self.detector_options.update(options)
        self._detector = None
        self.source = source

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, path: str | Path, config: str | Path | None = None,
                        **kwargs: Any) -> Predictor:
        """A checkpoint of ours; the network and codec are rebuilt from the run's saved config
        (``config``, default: the run folder's ``.hydra/config.yaml``)."""
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        import hih_lightning.config  # noqa: F401  (registers the ${div:...} resolver)

        state = load_checkpoint(path)  # first: a bad file is named before its run is looked up
        cfg = OmegaConf.load(config or run_config_path(path))
        module = instantiate(cfg.model, compile=False)
        module.load_state_dict(state.get("state_dict", state))
        return cls(module, source=str(path), **kwargs)

    @classmethod
    def from_published(cls, path: str | Path, variant: str = "hih_b", dataset: str = "wflw",
                       **kwargs: Any) -> Predictor:
        """The authors' published checkpoint (their ``state_dict`` layout, 256 px input)."""
        from hih_lightning.codecs import HIHCodec
        from hih_lightning.data.metainfo import get_meta
        from hih_lightning.losses import LandmarkLoss
        from hih_lightning.models.published import load_published_checkpoint

        net = load_published_checkpoint(path, variant=variant,
                                        num_landmarks=get_meta(dataset).num_landmarks)
        codec = HIHCodec(heatmap_size=net.heatmap_size, decimal_size=net.decimal_size)
        module = HIHLitModule(net, codec, LandmarkLoss(), optimizer=torch.optim.Adam,
                              dataset=dataset)
        return cls(module, source=f"{path} ({variant}, {dataset})", **kwargs)

    @classmethod
    def from_config(cls, cfg: Any) -> Predictor:
        """The model named by an hih-predict / hih-export config (``ckpt_path``,
        ``published_checkpoint`` or ``onnx_model``) with its prediction options."""
        from omegaconf import OmegaConf

        options = {key: cfg[key] for key in ("crop_factor", "batch_size", "device", "flip_test")
                   if key in cfg}
        if cfg.get("detector") is not None:
            options["detector"] = OmegaConf.to_container(cfg.detector, resolve=True)
        if cfg.get("onnx_model"):
            if cfg.get("ckpt_path") or cfg.get("published_checkpoint"):
                raise ConfigError("give one model: onnx_model, ckpt_path or "
                                  "published_checkpoint")
            return OnnxPredictor(cfg.onnx_model, **options)
        ckpt_path = resolve_ckpt_path(cfg)
        if ckpt_path and cfg.get("published_checkpoint"):
            raise ConfigError("give either ckpt_path or published_checkpoint, not both")
        if ckpt_path:
            return cls.from_checkpoint(ckpt_path, config=cfg.get("run_config"), **options)
        if cfg.get("published_checkpoint"):
            return cls.from_published(cfg.published_checkpoint, variant=cfg.published_variant,
                                      dataset=cfg.published_dataset, **options)
        raise ConfigError("no model: give ckpt_path=<checkpoint of ours> or "
                          "published_checkpoint=<the authors' file>")

    # -- facts ----------------------------------------------------------------------------
    @property
    def input_size(self) -> int:
        return self.module.input_size

    @property
    def num_landmarks(self) -> int:
        return len(self.module.meta.flip_map)

    def describe(self) -> dict[str, Any]:
        """What produced the predictions (written at the top of the JSON output)."""
        return {"model": self.source, "dataset": self.module.meta.name,
                "num_landmarks": self.num_landmarks, "input_size": self.input_size,
                "codec": repr(self.module.codec), "crop_factor": self.crop_factor,
                "flip_test": bool(self.module.hparams.flip_test), "device": str(self.device)}

    # -- the steps ------------------------------------------------------------------------
    def detect(self, image: np.ndarray) -> np.ndarray:
        """Detector boxes (K, 4) x1, y1, x2, y2 in image px, largest first."""
        if self._detector is None:
            from hih_lightning.predict.hog import HOGFaceDetector

            self._detector = HOGFaceDetector(**self.detector_options)
        return self._detector(image)

    def crop(self, image: np.ndarray, box: Sequence[float]
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The network's input for one face box: crop (S, S, 3) uint8, the image px -> crop px
        matrix (2, 3) and the crop square (cx, cy, side)."""
        # the dataset_box protocol reads only the box; crop_box's landmark argument is unused
        square = crop_box(np.zeros((1, 2)), "dataset_box", box=np.asarray(box, dtype=np.float64),
                          factor=self.crop_factor)
        matrix = crop_matrix(*square, self.input_size)
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        crop = warp_image(np.ascontiguousarray(image[:, :, :3]), matrix, self.input_size)
        return crop, matrix, np.array(square)

    def network_input(self, images: Sequence[np.ndarray],
                      boxes: Sequence[np.ndarray | None] | None = None) -> NetworkInput:
        """The network's (and the exported ONNX graph's) input for every face of several RGB
        images, and the way back to image pixels: see :class:`NetworkInput`.

        ``boxes[i]``: (K, 4) x1, y1, x2, y2 for image i, or None to detect its faces (detector
        boxes are moved onto the landmark boxes they predict before cropping).
        """
        boxes = [None] * len(images) if boxes is None else list(boxes)
        crops, matrices, squares, owners, given, sources = [], [], [], [], [], []
        for index, (image, image_boxes) in enumerate(zip(images, boxes, strict=True)):
            if image_boxes is None:
                detected = self.detect(image)
                image_boxes = detector_to_landmark_box(detected, self.box_scale, self.box_shift)
                shown, source = detected, "detector"
            else:
                image_boxes = shown = np.asarray(image_boxes, dtype=np.float64).reshape(-1, 4)
                source = "file"
            for box, box_shown in zip(image_boxes, shown, strict=True):
                crop, matrix, square = self.crop(image, box)
                crops.append(crop.transpose(2, 0, 1))
                matrices.append(matrix)
                squares.append(square)
                owners.append(index)
                given.append(box_shown)
                sources.append(source)
        size = self.input_size
        return NetworkInput(
            images=np.ascontiguousarray(np.asarray(crops, np.uint8).reshape(-1, 3, size, size)),
            matrices=np.asarray(matrices, np.float64).reshape(-1, 2, 3),
            boxes=np.asarray(given, np.float64).reshape(-1, 4),
            squares=np.asarray(squares, np.float64).reshape(-1, 3),
            owners=np.asarray(owners, np.int64), sources=sources)

    @torch.no_grad()
    def predict_crops(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Landmarks in crop px (B, N, 2) and scores (B, N) for uint8 crops (B, 3, S, S)."""
        points, scores = [], []
        for start in range(0, len(crops), self.batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(
                crops[start:start + self.batch_size])).to(self.device)
            output = self.module(batch)
            scores.append(self.module.codec.decode(output).scores.float().cpu())
            points.append(self.module.predict_crop(batch, output).float().cpu())
        n = self.num_landmarks
        if not points:
            return np.zeros((0, n, 2), np.float32), np.zeros((0, n), np.float32)
        return torch.cat(points).numpy(), torch.cat(scores).numpy()

    def predict_many(self, images: Sequence[np.ndarray],
                     boxes: Sequence[np.ndarray | None] | None = None) -> list[list[Face]]:
        """Faces of several RGB images, every face of every image in shared batches.

        ``boxes[i]``: (K, 4) x1, y1, x2, y2 for image i, or None to detect its faces.
        """
        batch = self.network_input(images, boxes)
        points, scores = self.predict_crops(batch.images)
        image_points = batch.to_image(points)
        faces: list[list[Face]] = [[] for _ in images]
        for i, owner in enumerate(batch.owners):
            faces[owner].append(Face(box=batch.boxes[i], crop=batch.squares[i],
                                     landmarks=image_points[i], scores=scores[i],
                                     box_source=batch.sources[i]))
        return faces

    def predict(self, image: np.ndarray, boxes: np.ndarray | Sequence[Sequence[float]] | None
                = None) -> list[Face]:
        """Faces of one RGB image (H, W, 3) uint8; ``boxes`` (K, 4) or None to detect them."""
        return self.predict_many([image], [None if boxes is None else np.asarray(boxes)])[0]


class OnnxPredictor(Predictor):
    """:class:`Predictor` with the network run by ONNX Runtime from a ``hih-export`` graph.

    Detector, crops and the way back to image pixels are the PyTorch backend's; the graph
    holds normalisation, network and decode, and runs 3x as fast on a CPU (1.3x end to end,
    experiments/predict_speed). Its landmarks equal PyTorch's to hih-export's tolerance.
    The graph has no flip test, so ``flip_test`` is refused rather than ignored.
    """

    def __init__(self, path: str | Path, crop_factor: float = 1.2, batch_size: int = 16,
                 device: str = "auto", flip_test: bool = False,
                 detector: dict[str, Any] | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError("onnx_model needs onnxruntime: pip install -e '.[export]'"
                              ) from None
        if flip_test:
            raise ConfigError("onnx_model: the exported graph has no flip test; use the "
                              "checkpoint (ckpt_path=...) for flip_test=true")
        if not Path(path).is_file():
            raise ConfigError(f"onnx_model={path}: no such file (hih-export writes one)")
        if device not in ("auto", "cpu"):
            raise ConfigError(f"onnx_model runs on the CPU; got device={device}")
        self.device = torch.device("cpu")
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (image,), (points, _) = self.session.get_inputs(), self.session.get_outputs()
        self._input_size, self._num_landmarks = int(image.shape[2]), int(points.shape[1])
        self._set_options(crop_factor, batch_size, detector, str(path))

    @property
    def input_size(self) -> int:
        return self._input_size

    @property
    def num_landmarks(self) -> int:
        return self._num_landmarks

    def describe(self) -> dict[str, Any]:
        return {"model": self.source, "backend": "onnx", "num_landmarks": self.num_landmarks,
                "input_size": self.input_size, "crop_factor": self.crop_factor,
                "flip_test": False, "device": "cpu"}

    def predict_crops(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        points, scores = [], []
        for start in range(0, len(crops), self.batch_size):
            batch = np.ascontiguousarray(crops[start:start + self.batch_size])
            batch_points, batch_scores = self.session.run(None, {"image": batch})
            points.append(batch_points)
            scores.append(batch_scores)
        n = self.num_landmarks
        if not points:
            return np.zeros((0, n, 2), np.float32), np.zeros((0, n), np.float32)
        return np.concatenate(points), np.concatenate(scores)
