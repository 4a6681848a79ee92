"""Spatial probes of frozen encoders: how well do a slice's features tell where the slice is?

* absolute pose: from the features of one rendered slice, regress its position in normalised voxel coordinates
  (3) and its normal direction as the sign-free outer product ``n n^T`` (6 distinct entries: a slice and its
  mirror image seen from the other side have opposite normals);
* relative pose: from the features of two slices of one trajectory, regress the action between them (7, with
  translations in units of ``scale_mm``);
* in-context pose: the absolute pose of the last slice of a walk in the pretraining regime, from its features alone
  and, for a context encoder, from its features in the context of the slices and actions before it; the same for
  the relative pose between the slice :data:`CONTEXT_GAP_STEPS` steps before the last and the last, from the two
  slices' features alone and in context.

Slices are rendered from real volumes at random poses (:class:`~monai_slicenav.transforms.RandSliceTrajectory`,
random start orientation); probes are ridge regressions fitted on some subjects and scored (R^2, averaged over
targets) on others, so a score says what transfers across anatomy, not what a probe memorised. Encoders of
different widths can be compared at an equal feature count with :func:`narrow_features` (PCA fitted on the
training slices).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..geometry import Pose, pose_vector, relative
from ..transforms import RandSliceTrajectory, RenderSlices
from ..volume import as_volume

__all__ = [
    "CONTEXT_GAP_STEPS",
    "PROBE_WALK",
    "ContextSet",
    "ProbeSet",
    "context_scores",
    "encode",
    "encode_in_context",
    "gap_start",
    "gap_target",
    "pose_target",
    "sample_context_set",
    "sample_probe_set",
    "ridge_fit",
    "r2_score",
    "pose_features",
    "encoder_features",
    "narrow_features",
    "probe_scores",
]


# How the probe sets' pairs are walked: small smooth steps (pairs a few mm apart), fixed for every encoder and
# independent of the pretraining regime (NAVIGATION_REGIME), so probe scores stay comparable across releases.
PROBE_WALK = {"max_translation": 2.0, "max_rotation": 0.05, "max_log_zoom": 0.03, "momentum": 0.8}
# The in-context relative-pose probe's pair: the last slice of a walk and the slice this many steps before it (as
# many steps as the probe pairs' ``steps_apart``; the first slice of shorter walks)
CONTEXT_GAP_STEPS = 4


@dataclass
class ProbeSet:
    """Rendered slices of one subject and their targets: ``slices`` (N, 2, C, h, w) as N pairs of slices of one
    trajectory, ``pose`` (N, 9) position and normal outer product of the first slice, ``gap`` (N, 7) the action
    from the first to the second slice."""

    slices: torch.Tensor
    pose: torch.Tensor
    gap: torch.Tensor


def sample_probe_set(
    volume: torch.Tensor,
    num_pairs: int,
    slice_size: int = 64,
    steps_apart: int = 4,
    seed: int = 0,
    threshold: float = 0.05,
    scale_mm: float = 32.0,
) -> ProbeSet:
    """Render ``num_pairs`` slice pairs (``steps_apart`` navigation steps apart, random start orientation) from a
    volume (C, X, Y, Z) with intensities in [0, 1], with their pose targets.

    Raises:
        ValueError/TypeError: for a volume :func:`~monai_slicenav.volume.as_volume` rejects.
    """
    _, affine = as_volume(volume)
    sampler = RandSliceTrajectory(
        steps_apart, slice_size, mode="mixed", start_orientation="random", threshold=threshold, **PROBE_WALK
    )
    sampler.set_random_state(seed)
    render = RenderSlices(slice_size)
    frame = sampler.frame(volume)
    slices, poses, gaps = [], [], []
    for _ in range(num_pairs):
        sampler.randomize()
        trajectory, _ = sampler.walk(frame)
        pair = Pose.from_tensor(trajectory.as_tensor()[[0, -1]])
        slices.append(render(volume, pair))
        poses.append(pose_target(pair[0], affine, volume.shape[1:]))
        gaps.append(gap_target(pair[0], pair[1], scale_mm))
    return ProbeSet(torch.stack(slices), torch.stack(poses), torch.stack(gaps))


def pose_target(pose: Pose, affine: torch.Tensor, spatial_shape: Sequence[int]) -> torch.Tensor:
    """The absolute-pose probe's target of one slice (9): its centre in normalised voxel coordinates and the
    distinct entries of its normal's outer product ``n n^T`` (sign-free)."""
    vector = pose_vector(pose, affine.float(), spatial_shape)
    normal = vector[6:9]
    outer = normal[:, None] * normal[None, :]
    return torch.cat([vector[:3], outer[tuple(torch.triu_indices(3, 3))]])


def gap_target(first: Pose, second: Pose, scale_mm: float) -> torch.Tensor:
    """The relative-pose probe's target of a pair (7): the action from ``first`` to ``second``, translations in
    units of ``scale_mm``."""
    gap = relative(first, second)
    return torch.cat([gap[:3] / scale_mm, gap[3:]])


@dataclass
class ContextSet:
    """Walks of one subject for the in-context probes: ``walk`` (N, T, C, h, w) rendered slices of N trajectories,
    ``actions`` (N, T - 1, 7) between them, ``pose`` (N, 9) the target of each walk's last slice, ``gap`` (N, 7) the
    relative pose from slice :func:`gap_start` to the last (translations in units of ``scale_mm``)."""

    walk: torch.Tensor
    actions: torch.Tensor
    pose: torch.Tensor
    gap: torch.Tensor


def gap_start(length: int) -> int:
    """The index of the first slice of the in-context relative-pose pair in a walk of ``length`` slices."""
    return max(0, length - 1 - CONTEXT_GAP_STEPS)


def sample_context_set(
    volume: torch.Tensor,
    num_walks: int,
    slice_size: int = 64,
    steps: int = 7,
    seed: int = 0,
    threshold: float = 0.05,
    scale_mm: float = 32.0,
) -> ContextSet:
    """Render ``num_walks`` trajectories of ``steps`` actions (random start orientation) in the pretraining regime
    (:data:`~monai_slicenav.transforms.NAVIGATION_REGIME`, the sampler's defaults: what the dynamics trunks learned
    from) on a volume (C, X, Y, Z) in [0, 1], with the pose target of each walk's last slice and the relative pose
    of its last pair (:func:`gap_start`)."""
    _, affine = as_volume(volume)
    sampler = RandSliceTrajectory(steps, slice_size, start_orientation="random", threshold=threshold)
    sampler.set_random_state(seed)
    render, frame = RenderSlices(slice_size), sampler.frame(volume)
    walks, actions, poses, gaps = [], [], [], []
    for _ in range(num_walks):
        sampler.randomize()
        trajectory, moves = sampler.walk(frame)
        walks.append(render(volume, trajectory))
        actions.append(moves.float())
        poses.append(pose_target(trajectory[-1], affine, volume.shape[1:]))
        gaps.append(gap_target(trajectory[gap_start(steps + 1)], trajectory[-1], scale_mm))
    return ContextSet(torch.stack(walks), torch.stack(actions), torch.stack(poses), torch.stack(gaps))


@torch.no_grad()
def encode_in_context(
    encoder: nn.Module,
    walks: torch.Tensor,
    actions: torch.Tensor,
    grid: int = 2,
    batch: int = 16,
    positions: Sequence[int] = (-1,),
) -> torch.Tensor:
    """Frozen features of the slices at ``positions`` (counted from the end; default: the last) of each walk,
    (N, len(positions) * F) concatenated in that order, each seen by a context encoder (``encoder(walks, actions)``:
    (N, T, c, h', w')) in the context of the slices and actions before it (at most ``encoder.max_context`` slices
    ending with it, the longest trajectory its trunk takes), pooled as :func:`encode` pools."""
    steps = walks.shape[1]
    length = min(steps, int(getattr(encoder, "max_context", steps)))
    windows = [(max(0, steps + p + 1 - length), steps + p + 1) for p in positions]  # each one's context
    features = []
    for start in range(0, len(walks), batch):
        walk, action = walks[start : start + batch], actions[start : start + batch]
        out = torch.cat([encoder(walk[:, a:b], action[:, a : b - 1])[:, -1:] for a, b in windows], dim=1)
        features.append(nn.functional.adaptive_avg_pool2d(out.flatten(0, 1).float(), grid).reshape(len(out), -1))
    return torch.cat(features)


def context_scores(
    encoder: nn.Module,
    train_sets: Sequence[ContextSet],
    test_sets: Sequence[ContextSet],
    alpha: float = 100.0,
    grid: int = 2,
) -> dict[str, float]:
    """The pose probe of each walk's last slice and the relative-pose probe of its last pair (:func:`gap_start`)
    (R^2 on the test sets after fitting on the training sets), from the slices' features alone (``pose_r2_last``,
    ``gap_r2_last``) and, for a context encoder, in the context of the walk (``pose_r2_ctx``, ``gap_r2_ctx``) and
    in the same context with each walk given another walk's actions (``*_ctx_shuffled``; NaN for other encoders):
    ``*_ctx - *_last`` is what the context adds, ``*_ctx - *_ctx_shuffled`` what the true actions add to it (paired
    within one encoder: no pretraining spread). With the true actions in its context the pair's relative pose is in
    the encoder's input, so ``gap_r2_ctx - gap_r2_ctx_shuffled`` also says how much of it the features read out.
    Features are pooled to a ``grid x grid`` layout (``nn.Identity()`` with ``grid=8``: the pixel baseline)."""
    length = train_sets[0].walk.shape[1]
    first = gap_start(length)

    def joined(sets: Sequence[ContextSet], field: str) -> torch.Tensor:
        return torch.cat([getattr(s, field) for s in sets])

    def scores(featurise: Callable[[Sequence[ContextSet]], torch.Tensor], suffix: str) -> dict[str, float]:
        train, test = featurise(train_sets), featurise(test_sets)  # (N, 2F): the pair's first slice, the last
        last = train.shape[1] // 2
        return {
            f"{target}_r2_{suffix}": r2_score(
                ridge_fit(train[:, columns], joined(train_sets, target), alpha)(test[:, columns]),
                joined(test_sets, target),
            )
            for target, columns in (("pose", slice(last, None)), ("gap", slice(None)))
        }

    def alone(sets: Sequence[ContextSet]) -> torch.Tensor:
        walks = joined(sets, "walk")
        return torch.cat([encode(encoder, walks[:, first], grid), encode(encoder, walks[:, -1], grid)], dim=1)

    def in_context(actions: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[Sequence[ContextSet]], torch.Tensor]:
        return lambda sets: encode_in_context(
            encoder, joined(sets, "walk"), actions(joined(sets, "actions")), grid, positions=(first - length, -1)
        )

    figures = scores(alone, "last")
    contexts = {"ctx": lambda actions: actions, "ctx_shuffled": lambda actions: actions.roll(1, dims=0)}
    for suffix, actions in contexts.items():  # shuffled: every walk given the actions of another walk
        if hasattr(encoder, "context_features"):
            figures.update(scores(in_context(actions), suffix))
        else:
            figures.update({f"{target}_r2_{suffix}": float("nan") for target in ("pose", "gap")})
    return figures


@torch.no_grad()
def encode(encoder: nn.Module | Callable, slices: torch.Tensor, grid: int = 2, batch: int = 64) -> torch.Tensor:
    """Frozen features of slices (N, C, h, w): the encoder's output average-pooled to a ``grid x grid`` layout
    and flattened, (N, F). Keeping a coarse layout lets a linear probe read where structures sit in the slice."""
    features = []
    for start in range(0, len(slices), batch):
        out = encoder(slices[start : start + batch])
        features.append(nn.functional.adaptive_avg_pool2d(out.float(), grid).flatten(1))
    return torch.cat(features)


def ridge_fit(
    features: torch.Tensor, targets: torch.Tensor, alpha: float = 1.0
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A ridge regression (features standardised on the training set, intercept unpenalised) in closed form."""
    mean, std = features.mean(0), features.std(0).clamp(min=1e-6)
    x = (features - mean) / std
    x = torch.cat([x, torch.ones(len(x), 1)], dim=1).double()
    penalty = alpha * torch.eye(x.shape[1], dtype=torch.float64)
    penalty[-1, -1] = 0.0
    weights = torch.linalg.solve(x.T @ x + penalty, x.T @ targets.double())

    def predict(new: torch.Tensor) -> torch.Tensor:
        z = torch.cat([(new - mean) / std, torch.ones(len(new), 1)], dim=1).double()
        return (z @ weights).float()

    return predict


def r2_score(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """Coefficient of determination averaged over target columns (1 is perfect, 0 is the mean predictor)."""
    residual = ((prediction - target) ** 2).sum(0)
    total = ((target - target.mean(0)) ** 2).sum(0).clamp(min=1e-12)
    return float((1 - residual / total).mean())


def pose_features(sets: Sequence[ProbeSet]) -> tuple[torch.Tensor, torch.Tensor]:
    """The probe targets themselves as features (first slice, and both slices of a pair): the oracle that bounds
    what a probe can score."""
    pose = torch.cat([s.pose for s in sets])
    gap = torch.cat([s.gap for s in sets])
    return pose, torch.cat([pose, gap], dim=1)


def encoder_features(
    featurise: Callable[[torch.Tensor], torch.Tensor], sets: Sequence[ProbeSet]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of the first slice of each pair, and of both slices concatenated, from ``featurise`` (slices
    (N, C, h, w) -> (N, F), e.g. ``lambda s: encode(encoder, s)``)."""
    slices = torch.cat([s.slices for s in sets])
    first, second = featurise(slices[:, 0]), featurise(slices[:, 1])
    return first, torch.cat([first, second], dim=1)


def narrow_features(
    train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor], width: int
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Project :func:`encoder_features` outputs onto the first ``width`` principal components of the training
    slices' standardised features (both slices of every pair), so that probes of encoders of different widths see
    equally many features. Returns (first, pair) for train and test, with ``width`` and ``2 * width`` columns (fewer
    when the encoder has fewer features)."""
    features = train[0].shape[1]
    slices = {name: (pair[0], pair[1][:, features:]) for name, pair in (("train", train), ("test", test))}
    fit = torch.cat(slices["train"]).double()
    mean, std = fit.mean(0), fit.std(0).clamp(min=1e-6)
    basis = torch.linalg.svd((fit - mean) / std, full_matrices=False).Vh[:width].T  # (F, width)

    def project(x: torch.Tensor) -> torch.Tensor:
        return (((x.double() - mean) / std) @ basis).float()

    (train_a, train_b), (test_a, test_b) = ((project(a), project(b)) for a, b in slices.values())
    return (train_a, torch.cat([train_a, train_b], dim=1)), (test_a, torch.cat([test_a, test_b], dim=1))


def probe_scores(
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    train_sets: Sequence[ProbeSet],
    test_sets: Sequence[ProbeSet],
    alpha: float = 100.0,
) -> dict[str, float]:
    """Fit the pose probe (on single-slice features) and the gap probe (on pair features) on the training sets'
    features ``train`` and score them (R^2) on ``test`` (each a pair from :func:`encoder_features` or
    :func:`pose_features`)."""
    pose = ridge_fit(train[0], torch.cat([s.pose for s in train_sets]), alpha)(test[0])
    gap = ridge_fit(train[1], torch.cat([s.gap for s in train_sets]), alpha)(test[1])
    return {
        "pose_r2": r2_score(pose, torch.cat([s.pose for s in test_sets])),
        "gap_r2": r2_score(gap, torch.cat([s.gap for s in test_sets])),
    }
