"""HIH face alignment (Heatmap in Heatmap) as a PyTorch Lightning + Hydra framework."""

from hih_lightning.models import build_model, load_published_checkpoint

__version__ = "0.1.0"
__all__ = ["build_model", "load_published_checkpoint", "__version__"]
