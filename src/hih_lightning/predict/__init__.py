"""Use a trained model: landmarks on photos and videos (hih-predict, :class:`Predictor`)."""

from hih_lightning.predict.predictor import Face, Predictor

__all__ = ["Face", "Predictor"]
