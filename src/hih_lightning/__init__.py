"""HIH face alignment (Heatmap in Heatmap) as a PyTorch Lightning + Hydra framework."""

import os

# albumentations asks PyPI for a newer version on import unless this is set; no network call
# happens by surprise here (photometric augmentations import it, also in data workers).
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from hih_lightning.models import build_model, load_published_checkpoint  # noqa: E402

__version__ = "0.1.0"
__all__ = ["build_model", "load_published_checkpoint", "__version__"]
