"""The sweep's shared fixture (a small export), and the sweep table of the reliability tests that ran: class,
entry point, cases tried, cases handled."""

import os
from collections import Counter
from pathlib import Path

import pytest

from monai_slicenav.encoders import SliceEncoder
from monai_slicenav.export import export_encoder
from monai_slicenav.networks import TokenizerConfig

from .harness import SWEEP

ARTIFACTS = Path(os.environ.get("SLICENAV_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))


@pytest.fixture
def exported(tmp_path):
    """A small slice encoder exported to ``tmp_path/enc`` (encoder.pt + encoder.json)."""
    export_encoder(SliceEncoder(TokenizerConfig(channels=(8, 16))), tmp_path / "enc")
    return tmp_path / "enc"


def pytest_sessionfinish(session, exitstatus):
    if not SWEEP:
        return
    tried = Counter((row["class"], row["entry"]) for row in SWEEP)
    done = Counter((row["class"], row["entry"]) for row in SWEEP if row["handled"])
    lines = ["| class | entry point | cases tried | handled |", "|---|---|---|---|"]
    lines += [f"| {k} | {e} | {n} | {done[(k, e)]} |" for (k, e), n in sorted(tried.items())]
    lines += [f"| **all** | | **{len(SWEEP)}** | **{sum(done.values())}** |"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "reliability_sweep.md").write_text("\n".join(lines) + "\n")
