"""Where the read-only shared test data (/work/shared: corpus, labelled mail, tools) lives.

`MAILBOT_SHARED` overrides the default, the `shared` folder next to the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def _locate() -> Path | None:
    """The shared-data folder, or None when it is not on this machine."""
    configured = os.environ.get("MAILBOT_SHARED")
    candidate = (
        Path(configured) if configured else Path(__file__).resolve().parents[1].parent / "shared"
    )
    return candidate if candidate.is_dir() else None


SHARED: Path | None = _locate()


def require_shared(sub: str = "") -> Path:
    """The shared folder (or its `sub` path); skips the calling test when it is absent."""
    if SHARED is None:
        pytest.skip("shared test data not found: set MAILBOT_SHARED or put it at ../shared")
    path = SHARED / sub if sub else SHARED
    if not path.exists():
        pytest.skip(f"shared test data {path} is absent")
    return path
