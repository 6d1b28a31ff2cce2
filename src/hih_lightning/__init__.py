"""HIH face alignment (Heatmap in Heatmap) as a PyTorch Lightning + Hydra framework."""

import os

# albumentations asks PyPI for a newer version on import unless this is set; no network call
# happens by surprise here (photometric augmentations import it, also in data workers).
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from hih_lightning.models import build_model, load_published_checkpoint  # noqa: E402

__version__ = "0.1.0"
__all__ = ["Predictor", "build_model", "load_published_checkpoint", "__version__"]


def __getattr__(name: str) -> object:
    """``hih_lightning.Predictor`` imported on first use (it pulls in Lightning and OpenCV)."""
    if name == "Predictor":
        from hih_lightning.predict.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'hih_lightning' has no attribute {name!r}")
