"""`make install` installs with uv, which reads no pip config: the Makefile must hand pip's
find-links to uv, or torch==2.13.0 comes from PyPI as a multi-GB CUDA build instead of the
local CPU wheel."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def _uv_command(tmp_path: Path, env: dict[str, str], *make_args: str) -> str:
    """The uv command line `make install` would run (a dry run: nothing is installed)."""
    out = subprocess.run(
        ["make", "-n", "-B", "install", f"VENV={tmp_path / 'venv'}", f"PYTHON={sys.executable}",
         *make_args],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
    (line,) = [x for x in out.replace("\\\n", " ").splitlines() if "uv pip install" in x]
    return line


def _pip_env(tmp_path: Path, config: str, **extra: str) -> dict[str, str]:
    """This process's environment with pip's config replaced by `config` alone."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    (tmp_path / "pip.conf").write_text(config)
    return {**env, "PIP_CONFIG_FILE": str(tmp_path / "pip.conf"), **extra}


def test_find_links_from_pips_config_file_reach_uv(tmp_path):
    env = _pip_env(tmp_path, "[global]\nfind-links = /wheels/local\n")
    line = _uv_command(tmp_path, env)
    assert re.findall(r"--find-links (\S+)", line) == ["/wheels/local"]
    assert '"torch==2.13.0"' in line


def test_find_links_from_the_environment_reach_uv(tmp_path):
    env = _pip_env(tmp_path, "[global]\n", PIP_FIND_LINKS="/wheels/a /wheels/b")
    line = _uv_command(tmp_path, env)
    assert re.findall(r"--find-links (\S+)", line) == ["/wheels/a", "/wheels/b"]


def test_no_find_links_when_pip_has_none_or_they_are_cleared(tmp_path):
    assert "--find-links" not in _uv_command(tmp_path, _pip_env(tmp_path, "[global]\n"))
    env = _pip_env(tmp_path, "[global]\nfind-links = /wheels/local\n")
    assert "--find-links" not in _uv_command(tmp_path, env, "FIND_LINKS=")
