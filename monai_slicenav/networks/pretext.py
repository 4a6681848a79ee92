"""Pose pretext heads on per-slice features: the absolute pose vector of a slice, and the relative pose ("gap")
between every pair of slices of a sequence (inverse dynamics). The targets come free from the trajectory sampler
(:func:`~monai_slicenav.geometry.pose_vector`, :func:`~monai_slicenav.geometry.gap_matrix`)."""

from __future__ import annotations

import torch
from torch import nn

from ..geometry import ACTION_DIM, POSE_VECTOR_DIM

__all__ = ["PoseHead", "GapHead"]


def _mlp(in_features: int, hidden: int, out_features: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_features, hidden), nn.GELU(), nn.Linear(hidden, out_features))


class PoseHead(nn.Module):
    """(..., width) slice features -> (..., 10) pose vectors (normalised position, column direction, normal,
    log-scale)."""

    def __init__(self, width: int, hidden: int = 128) -> None:
        super().__init__()
        self.mlp = _mlp(width, hidden, POSE_VECTOR_DIM)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(features)


class GapHead(nn.Module):
    """(B, S, width) slice features -> (B, S, S, 7) predicted actions between every ordered pair of slices.

    Each pair is read from the concatenation of its two features, so ``[i, j]`` and ``[j, i]`` are predicted
    separately (they are each other's inverse)."""

    def __init__(self, width: int, hidden: int = 128) -> None:
        super().__init__()
        self.mlp = _mlp(2 * width, hidden, ACTION_DIM)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        s = features.shape[-2]
        first = features[..., :, None, :].expand(*features.shape[:-2], s, s, features.shape[-1])
        second = features[..., None, :, :].expand_as(first)
        return self.mlp(torch.cat([first, second], dim=-1))
