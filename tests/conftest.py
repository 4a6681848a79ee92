"""Fixtures shared by the tests: one trained tokenizer bundle per session (stage 2 needs a stage 1)."""

from pathlib import Path

import pytest

from .helpers import TINY_SLICES, bundle_workflow, record_losses


@pytest.fixture(scope="session")
def tokenizer_bundle(tmp_path_factory) -> Path:
    """A tokenizer bundle root trained for 2 epochs at the smallest settings (channels 8, 16, 16)."""
    root = tmp_path_factory.mktemp("tokenizer")
    record_losses(
        bundle_workflow("slicenav_tokenizer", root, **TINY_SLICES, max_epochs=2, val_interval=5, channels=[8, 16, 16])
    )
    return root
