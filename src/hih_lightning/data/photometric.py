"""Pixel-level augmentation: albumentations transforms on the warped crop, seeded per sample.

Geometry (translation, flip, rotation) stays in the one affine warp of
:mod:`hih_lightning.data.transforms`: the same matrix moves the landmarks exactly, the image is
resampled once, and a flip renames landmarks. What comes after the warp only changes pixel
values, so any albumentations pixel-level transform fits, listed in the data config as
``data.augment.photometric`` (see ``conf/data/augment/``). :class:`Photometric` runs the list
as one ``albumentations.Compose`` and draws every random number from the sample's generator, so
(seed, epoch, index) fixes the image whatever the number of data-loader workers.

The published recipe's pixel part (HIH_SPEC section 5) is :class:`ScaledGaussianBlur` and
:class:`RandomOcclusion`; both state their magnitudes at the published 256 px crop or as
fractions of it, so they mean the same at any crop size.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import albumentations as A
import numpy as np
from albumentations.augmentations.blur.functional import create_gaussian_kernel_1d
from albumentations.augmentations.dropout.transforms import BaseDropout

__all__ = ["Photometric", "RandomOcclusion", "ScaledGaussianBlur", "check_photometric",
           "published_photometric"]

# Transforms that only change pixel values in place: albumentations' pixel-level family and the
# dropouts (they paint over pixels; albumentations calls them dual only because they also
# erase masks and keypoints, which never pass through this list).
_PIXEL_LEVEL = (A.ImageOnlyTransform, BaseDropout, A.PixelDropout, A.NoOp)


class ScaledGaussianBlur(A.GaussianBlur):
    """``albumentations.GaussianBlur`` with its sigma range stated at a ``reference_size`` crop.

    The published blur, radius (sigma) U(0, 5) px, is meant for 256 px crops; smaller crops
    (the synthetic 64 or 128 px jobs) get the same blur relative to the face. Sigma is drawn
    as ``GaussianBlur`` draws it, then scaled by width / ``reference_size``; at the reference
    size the output is ``GaussianBlur``'s, pixel for pixel (kernel size int(3.5 sigma) * 2 + 1).
    """

    def __init__(self, sigma_limit: tuple[float, float] | float = (0.0, 5.0),
                 reference_size: int = 256, p: float = 0.3) -> None:
        if reference_size <= 0:
            raise ValueError(f"reference_size must be positive, got {reference_size}")
        super().__init__(blur_limit=0, sigma_limit=sigma_limit, p=p)
        self.reference_size = reference_size

    def get_params_dependent_on_data(self, params: dict[str, Any],
                                     data: dict[str, Any]) -> dict[str, Any]:
        """The parent's draws in the parent's order, sigma scaled to this crop."""
        scale = params["shape"][1] / self.reference_size
        sigma = self.py_random.uniform(*self.sigma_limit) * scale
        ksize = self.py_random.randint(*self.blur_limit)
        return {"kernel": create_gaussian_kernel_1d(sigma, ksize), "sigma": sigma}


class RandomOcclusion(A.ImageOnlyTransform):
    """One solid rectangle in one uniformly random colour (the published occlusion), uint8.

    Width and height are uniform integers in 1..int(max_fraction x side), the position uniform
    with the rectangle fully inside. ``albumentations.CoarseDropout`` does not match this at
    every crop size: with fractional sizes it draws int(side x U), which can be 0 px and makes
    the largest size rarer; with pixel sizes it does not follow the crop size.
    """

    def __init__(self, max_fraction: float = 0.4, p: float = 0.5) -> None:
        if not 0 < max_fraction <= 1:
            raise ValueError(f"max_fraction must be in (0, 1], got {max_fraction}")
        super().__init__(p=p)
        self.max_fraction = max_fraction

    def get_params_dependent_on_data(self, params: dict[str, Any],
                                     data: dict[str, Any]) -> dict[str, Any]:
        """Draw (x0, y0, w, h) in crop px and the fill colour."""
        shape = params["shape"]
        height, width = shape[:2]
        draw = self.random_generator.integers
        w = int(draw(1, max(1, int(self.max_fraction * width)) + 1))
        h = int(draw(1, max(1, int(self.max_fraction * height)) + 1))
        x0, y0 = int(draw(0, width - w + 1)), int(draw(0, height - h + 1))
        colour = draw(0, 256, size=shape[2] if len(shape) == 3 else 1).astype(np.uint8)
        return {"rect": (x0, y0, w, h), "colour": colour}

    def apply(self, img: np.ndarray, rect: tuple[int, int, int, int], colour: np.ndarray,
              **params: Any) -> np.ndarray:
        """Paint the rectangle on a copy."""
        x0, y0, w, h = rect
        out = img.copy()
        out[y0:y0 + h, x0:x0 + w] = colour if img.ndim == 3 else colour[0]
        return out


def published_photometric() -> list[A.BasicTransform]:
    """The published pixel part: blur (p 0.3), then occlusion (p 0.5); = augment/published."""
    return [ScaledGaussianBlur(sigma_limit=(0.0, 5.0), reference_size=256, p=0.3),
            RandomOcclusion(max_fraction=0.4, p=0.5)]


def _public_name(transform: Any) -> str:
    cls = type(transform)
    if getattr(A, cls.__name__, None) is cls:
        return f"albumentations.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def check_photometric(transforms: Sequence[Any], key: str = "augment.photometric"
                      ) -> tuple[Any, ...]:
    """Refuse anything but pixel-level albumentations transforms, naming the item and why.

    Compositions (``OneOf``, ``SomeOf``, ``Sequential``, ...) are allowed when everything in
    them is pixel-level.
    """
    if isinstance(transforms, (str, bytes)) or not isinstance(transforms, Sequence):
        raise ValueError(f"{key} must be a list of albumentations transforms, "
                         f"got {type(transforms).__name__}")
    for i, transform in enumerate(transforms):
        where = f"{key}[{i}]"
        if isinstance(transform, A.BaseCompose):
            check_photometric(list(transform.transforms), f"{where}.transforms")
        elif isinstance(transform, _PIXEL_LEVEL):
            continue
        elif isinstance(transform, A.BasicTransform):
            raise ValueError(
                f"{where}: {_public_name(transform)} is a geometric (spatial-level) transform; "
                "geometry belongs to the affine part of the augmentation (augment.translate_*, "
                "flip_*, rotate_*), where one matrix warps the image and moves the landmarks "
                "exactly, the image is resampled once and a flip renames left/right landmarks. "
                "A geometric transform after the warp would move pixels away from their "
                "landmarks. Only pixel-level transforms (albumentations.ImageOnlyTransform "
                "subclasses, dropouts) may be listed here.")
        else:
            raise ValueError(f"{where}: {transform!r} is not an albumentations transform")
    return tuple(transforms)


class Photometric:
    """The checked list as one ``albumentations.Compose``, seeded from the sample's generator.

    Every draw (each transform's probability and magnitudes) comes from ``rng``, which the
    caller has already used for the geometric draws; nothing is left in albumentations' own
    state between samples, so results depend on (seed, epoch, index) only. Not thread-safe:
    one instance per data-loader worker process, as PyTorch gives each worker its own copy.
    """

    def __init__(self, transforms: Sequence[Any], key: str = "augment.photometric") -> None:
        self.compose = A.Compose(list(check_photometric(transforms, key)))

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Apply the list to an (S, S, C) uint8 crop; the same shape and dtype come back."""
        # One generator shared by all transforms (not one seed each: albumentations' seed
        # would give every transform the same stream, so their p-draws would coincide).
        self.compose.set_random_state(rng, random.Random(int(rng.integers(2**63))))
        out = self.compose(image=image)["image"]
        if out.shape != image.shape or out.dtype != image.dtype:
            raise ValueError(f"photometric transforms must keep the crop's shape {image.shape} "
                             f"and dtype {image.dtype}, got {out.shape} {out.dtype}")
        return out
