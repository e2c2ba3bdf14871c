"""Fixtures that several test files share."""

from __future__ import annotations

import json

import pytest

from depthcard.lab import organisms as org


@pytest.fixture(scope="session")
def truth() -> dict:
    """The bundled calibration pair's ground truth (what its training made true)."""
    return json.loads((org.DEFAULT_DIR / "ground_truth.json").read_text(encoding="utf-8"))
