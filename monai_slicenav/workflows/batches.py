"""``prepare_batch`` callables of the pretraining workflows: how a collated batch becomes the network's inputs and
targets, so that MONAI's own ``SupervisedTrainer`` / ``SupervisedEvaluator`` iteration (AMP, events) runs them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.engines.utils import PrepareBatch

from ..networks.volume_mae import mask_volumes

__all__ = ["PrepareSlices", "PrepareTrajectories", "PrepareMaskedVolumes"]


class PrepareSlices(PrepareBatch):
    """``prepare_batch`` of the tokenizer's trainer and evaluator: rendered slice stacks (B, T, C, h, w) under
    ``image_key`` become one batch of slices (B * T, C, h, w), which is both the input and the target, so MONAI's
    own ``SupervisedTrainer`` iteration (AMP, gradient accumulation, events) trains the autoencoder.

    Raises:
        KeyError: when the batch has no ``image_key``.
        ValueError: when the stacks are not 5-D.
    """

    def __init__(self, image_key: str = "image") -> None:
        self.image_key = image_key

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.image_key not in batchdata:
            raise KeyError(f"PrepareSlices: the batch has no {self.image_key!r} (keys: {list(batchdata)}).")
        stacks = torch.as_tensor(batchdata[self.image_key])
        if stacks.ndim != 5:
            raise ValueError(f"Expected slice stacks (B, T, C, h, w), got shape {tuple(stacks.shape)}.")
        slices = stacks.flatten(0, 1).to(device=device, non_blocking=non_blocking, **kwargs)  # (B * T, C, h, w)
        return slices, slices


class PrepareTrajectories(PrepareBatch):
    """``prepare_batch`` of the dynamics trainer and evaluator: returns the slice stacks (B, T, C, h, w) as inputs,
    the pose targets (``poses`` and, when present, ``pose_vectors``) as targets, and the actions (B, T - 1, 7) as the
    network's second argument, so MONAI's ``SupervisedTrainer`` calls ``network(slices, actions)``. With
    ``max_steps``, longer trajectories are cut to their first ``max_steps`` slices (inference on long trajectories).

    Raises:
        KeyError: when the batch lacks the slices, the actions or the poses.
    """

    def __init__(
        self,
        image_key: str = "image",
        action_key: str = "actions",
        target_keys: Sequence[str] = ("poses", "pose_vectors"),
        max_steps: int | None = None,
    ) -> None:
        self.image_key, self.action_key, self.target_keys = image_key, action_key, tuple(target_keys)
        self.max_steps = max_steps

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], tuple[torch.Tensor], dict]:
        missing = [k for k in (self.image_key, self.action_key, self.target_keys[0]) if k not in batchdata]
        if missing:
            raise KeyError(f"PrepareTrajectories: the batch lacks {missing} (keys: {list(batchdata)}).")

        def move(key: str, steps: int | None) -> torch.Tensor:
            value = torch.as_tensor(batchdata[key])[:, :steps]
            return value.to(device=device, non_blocking=non_blocking, **kwargs)

        cut = self.max_steps
        targets = {key: move(key, cut) for key in self.target_keys if key in batchdata}
        actions = move(self.action_key, None if cut is None else cut - 1)
        return move(self.image_key, cut), targets, (actions,), {}


class PrepareMaskedVolumes(PrepareBatch):
    """``prepare_batch`` of the masked autoencoder: crops (B, C, D, H, W) under ``image_key`` become the masked
    crops (inputs) and the crops with the mask as an extra last channel (targets, as
    :class:`~monai_slicenav.networks.MaskedReconstructionLoss` reads them).

    Args:
        image_key: key of the crops.
        ratio: fraction of ``patch^3`` cubes hidden.
        patch: cube side in voxels.
        seed: None draws masks from torch's global generator (training, seeded by ``set_determinism``); an int
            draws every batch's masks from a generator seeded with it (the same masks at every validation).

    Raises:
        KeyError: when the batch lacks ``image_key``.
    """

    def __init__(self, image_key: str = "image", ratio: float = 0.6, patch: int = 8, seed: int | None = None) -> None:
        self.image_key, self.ratio, self.patch, self.seed = image_key, ratio, patch, seed

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.image_key not in batchdata:
            raise KeyError(f"PrepareMaskedVolumes: the batch has no {self.image_key!r} (keys: {list(batchdata)}).")
        volumes = torch.as_tensor(batchdata[self.image_key]).to(device=device, non_blocking=non_blocking, **kwargs)
        generator = torch.Generator().manual_seed(self.seed) if self.seed is not None else None
        masked, mask = mask_volumes(volumes, self.ratio, self.patch, generator)
        return masked, torch.cat([volumes, mask], dim=1)
