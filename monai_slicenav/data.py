"""Datalists: the embedded default training data, generated on the fly or found installed; never downloaded."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .packaged import packaged_pairs

__all__ = ["synthetic_seed", "embedded_datalist", "file_datalist"]


def synthetic_seed(seed: int, index: int) -> int:
    """The label-map seed of synthetic volume ``index`` in the dataset drawn with ``seed`` (independent streams)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def embedded_datalist(num_synthetic: int = 16, seed: int = 0, include_packaged: bool = True) -> list[dict]:
    """The default training datalist: synthetic volumes, deterministic per index and seed, then (optionally) the
    real image/label pairs of :func:`~monai_slicenav.packaged.packaged_pairs` installed on this machine.

    Synthetic items are ``{"source": "synthetic", "synth_seed": int, "name": str}``; packaged ones carry
    ``"source": "packaged"`` and file paths. :class:`~monai_slicenav.transforms.EmbeddedVolumed` turns both into
    ``image`` and ``label``; for synthetic items alone, :class:`~monai_slicenav.transforms.SynthLabelEnsembled`
    and :class:`~monai_slicenav.transforms.RandSynthAppearanced` do the same. Synthetic label maps can be kept in a
    disk cache: ``cache_dir`` of :class:`~monai_slicenav.transforms.SynthLabelEnsemble` (also through
    ``EmbeddedVolumed(synth_options={"cache_dir": ...})``).

    Raises:
        ValueError: when ``num_synthetic`` < 0, or the list would be empty.
    """
    if num_synthetic < 0:
        raise ValueError(f"num_synthetic must be >= 0, got {num_synthetic}.")
    items = [
        {"source": "synthetic", "synth_seed": synthetic_seed(seed, index), "name": f"synth_s{seed}_{index:04d}"}
        for index in range(num_synthetic)
    ]
    if include_packaged:
        items += packaged_pairs()
    if not items:
        raise ValueError("The embedded datalist is empty: ask for num_synthetic >= 1 or install packaged volumes.")
    return items


def file_datalist(paths: Sequence[str | os.PathLike]) -> list[dict]:
    """Items of your own image files for :class:`~monai_slicenav.transforms.EmbeddedVolumed`:
    ``{"source": "file", "image": path, "name": file name without extensions}``.

    Raises:
        FileNotFoundError: naming the first missing file.
    """
    items = []
    for path in map(Path, paths):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file.")
        items.append({"source": "file", "image": str(path), "name": path.name.split(".")[0]})
    return items
