"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real annotation files (``../shared/data``; override with HIH_SHARED_DATA).

    Where they are missing the tests that need them skip, except under CI (``CI=true``),
    where a missing folder fails them: a CI run must not pass by skipping its real-data tests.
    """
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    root = Path(os.environ.get("HIH_SHARED_DATA", default))
    if not root.is_dir():
        message = f"real annotation files not found at {root}; set HIH_SHARED_DATA"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message} (CI=true: missing data fails the run)", pytrace=False)
        pytest.skip(message)
    return root


@pytest.fixture
def compose_cfg(tmp_path):
    """Compose the real Hydra configs (train.yaml / eval.yaml) with tiny overrides.

    Outputs go to ``tmp_path``; no logger, tiny synthetic splits unless overridden.
    """
    from hydra import compose, initialize_config_dir

    from hih_lightning.config import CONFIG_DIR

    def _compose(*overrides: str, config_name: str = "train", tiny: bool = True):
        run_dir = tmp_path / "logs" / "train" / "runs" / "out"
        base = [f"paths.log_dir={tmp_path / 'logs'}", f"paths.output_dir={run_dir}",
                "logger=csv"]
        if tiny and config_name == "train":
            base.append("debug=tiny")
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            return compose(config_name, overrides=base + list(overrides))

    return _compose
