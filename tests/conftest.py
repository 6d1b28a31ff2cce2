"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real annotation files (``../shared/data``; override with HIH_SHARED_DATA)."""
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    root = Path(os.environ.get("HIH_SHARED_DATA", default))
    if not root.is_dir():
        pytest.skip(f"real annotation files not found at {root}; set HIH_SHARED_DATA")
    return root
