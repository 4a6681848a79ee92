"""Datalists: the embedded default training data, generated on the fly and needing no download."""

from __future__ import annotations

import numpy as np

__all__ = ["synthetic_seed", "embedded_datalist"]


def synthetic_seed(seed: int, index: int) -> int:
    """The label-map seed of synthetic volume ``index`` in the dataset drawn with ``seed`` (independent streams)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def embedded_datalist(num_synthetic: int = 16, seed: int = 0) -> list[dict]:
    """The default training datalist: ``num_synthetic`` synthetic volumes, deterministic per index and seed.

    Each item is ``{"synth_seed": int, "name": str}``; :class:`~monai_slicenav.transforms.SynthLabelEnsembled`
    turns it into a label map (with an optional disk cache) and
    :class:`~monai_slicenav.transforms.RandSynthAppearanced` into images.

    Raises:
        ValueError: when ``num_synthetic`` < 1.
    """
    if num_synthetic < 1:
        raise ValueError(f"num_synthetic must be >= 1, got {num_synthetic}.")
    return [
        {"synth_seed": synthetic_seed(seed, index), "name": f"synth_s{seed}_{index:04d}"}
        for index in range(num_synthetic)
    ]
