"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# --- shared data (../shared/data beside the repo) --------------------------------------------
# Real clips and reference outputs. Someone who clones only the project does not have them, so a
# test that needs them skips; CI always has them, so there (env CI set) a missing folder fails.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of the shared data folder; skips (or fails under CI) when it is absent."""
    if not SHARED_DATA.is_dir():
        msg = f"shared data folder {SHARED_DATA} not found (it lives beside the repo as ../shared/data)"
        if os.environ.get("CI"):
            pytest.fail(msg + "; CI must provide it")
        pytest.skip(msg)
    return SHARED_DATA
