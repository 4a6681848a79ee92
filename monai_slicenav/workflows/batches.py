"""``prepare_batch`` callables of the pretraining workflows: how a collated batch becomes the network's inputs and
targets, so that MONAI's own ``SupervisedTrainer`` / ``SupervisedEvaluator`` iteration (AMP, events) runs them."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from monai.engines.utils import PrepareBatch

from ..geometry import Pose
from ..networks.volume_mae import mask_volumes
from ..transforms.device_render import channel_modes
from ..transforms.render import render_slices

__all__ = ["PrepareSlices", "PrepareTrajectories", "PrepareMaskedVolumes", "PrepareAppearances", "RenderOnDevice"]


class _PrepareFromKeys(PrepareBatch):
    """MONAI's ``PrepareBatch`` call, once for every subclass: check that the batch holds :meth:`required_keys`
    (a ``KeyError`` names the missing ones and the keys present), then :meth:`prepare`."""

    def required_keys(self) -> tuple[str, ...]:
        return (self.image_key,)

    @abstractmethod
    def prepare(self, batchdata: Mapping[str, Any], move: Callable[[Any], torch.Tensor]) -> tuple:
        """The network's inputs and targets from a checked batch; ``move`` puts a value on the engine's device."""

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs,
    ) -> tuple:
        missing = [k for k in self.required_keys() if k not in batchdata]
        if missing:
            named = ", ".join(map(repr, missing))
            raise KeyError(f"{type(self).__name__}: the batch has no {named} (keys: {list(batchdata)}).")
        return self.prepare(
            batchdata, lambda value: torch.as_tensor(value).to(device=device, non_blocking=non_blocking, **kwargs)
        )


class PrepareSlices(_PrepareFromKeys):
    """``prepare_batch`` of the tokenizer's trainer and evaluator: rendered slice stacks (B, T, C, h, w) under
    ``image_key`` become one batch of slices (B * T, C, h, w), which is both the input and the target, so MONAI's
    own ``SupervisedTrainer`` iteration (AMP, gradient accumulation, events) trains the autoencoder.

    Raises:
        KeyError: when the batch has no ``image_key``.
        ValueError: when the stacks are not 5-D.
    """

    def __init__(self, image_key: str = "image") -> None:
        self.image_key = image_key

    def prepare(self, batchdata: Mapping[str, Any], move: Callable[[Any], torch.Tensor]) -> tuple:
        stacks = torch.as_tensor(batchdata[self.image_key])
        if stacks.ndim != 5:
            raise ValueError(f"Expected slice stacks (B, T, C, h, w), got shape {tuple(stacks.shape)}.")
        slices = move(stacks.flatten(0, 1))  # (B * T, C, h, w)
        return slices, slices


class PrepareTrajectories(_PrepareFromKeys):
    """``prepare_batch`` of the dynamics trainer and evaluator: returns the slice stacks (B, T, C, h, w) as inputs,
    the pose targets (``poses`` and, when present, ``pose_vectors``; with the ``actions``) as targets, the actions as
    the network's second argument and the slices' pixel spacing (B, T, from the poses) as ``spacing``, so MONAI's
    ``SupervisedTrainer`` calls ``network(slices, actions, spacing=spacing)``. With
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

    def required_keys(self) -> tuple[str, ...]:
        return self.image_key, self.action_key, self.target_keys[0]

    def prepare(self, batchdata: Mapping[str, Any], move: Callable[[Any], torch.Tensor]) -> tuple:
        def first(key: str, steps: int | None) -> torch.Tensor:
            return move(torch.as_tensor(batchdata[key])[:, :steps])

        cut = self.max_steps
        targets = {key: first(key, cut) for key in self.target_keys if key in batchdata}
        actions = first(self.action_key, None if cut is None else cut - 1)
        targets["actions"] = actions  # also read by metrics of the outputs (ControllabilityMetric)
        spacing = Pose.from_tensor(targets[self.target_keys[0]]).spacing
        return first(self.image_key, cut), targets, (actions,), {"spacing": spacing}


class PrepareMaskedVolumes(_PrepareFromKeys):
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

    def prepare(self, batchdata: Mapping[str, Any], move: Callable[[Any], torch.Tensor]) -> tuple:
        volumes = move(batchdata[self.image_key])
        generator = torch.Generator().manual_seed(self.seed) if self.seed is not None else None
        masked, mask = mask_volumes(volumes, self.ratio, self.patch, generator)
        return masked, torch.cat([volumes, mask], dim=1)


class PrepareAppearances(_PrepareFromKeys):
    """``prepare_batch`` of the voxel-contrastive trainer and evaluator: the appearances of the same label maps
    under ``image_keys`` (each (B, C, X, Y, Z)) stacked view-major into one batch (V * B, C, X, Y, Z), the input;
    the label maps under ``label_key``, the target (:class:`~monai_slicenav.networks.PyramidContrastiveLoss`)."""

    def __init__(self, image_keys: Sequence[str] = ("image", "image_view2"), label_key: str = "label") -> None:
        super().__init__()
        self.image_keys, self.label_key = tuple(image_keys), label_key
        self.image_key = self.image_keys[0]

    def required_keys(self) -> tuple[str, ...]:
        return (*self.image_keys, self.label_key)

    def prepare(self, batchdata: Mapping[str, Any], move: Callable[[Any], torch.Tensor]) -> tuple:
        return torch.cat([move(batchdata[k]) for k in self.image_keys]), move(batchdata[self.label_key])


class PrepareSliceAppearances(PrepareAppearances):
    """``prepare_batch`` of the tokenizer trained with an appearance-contrastive term: the slice stacks (B, T, C, h,
    w) of the same trajectories rendered from V appearances (``image_keys``) become one batch of slices, view-major
    (V * B * T, C, h, w), the input; the target is that batch with the rendered label slices (``label_key``, the
    same for every view) as one more channel (:class:`~monai_slicenav.networks.TokenizerContrastiveLoss`).

    Raises:
        KeyError: when the batch lacks an appearance or the labels.
        ValueError: when the stacks are not 5-D or do not match.
    """

    def prepare(self, batchdata: Mapping[str, Any], move: Callable[[Any], torch.Tensor]) -> tuple:
        stacks = [torch.as_tensor(batchdata[key]) for key in (*self.image_keys, self.label_key)]
        if any(s.ndim != 5 or s.shape[:2] + s.shape[3:] != stacks[0].shape[:2] + stacks[0].shape[3:] for s in stacks):
            raise ValueError(
                f"Expected slice stacks (B, T, C, h, w) of one trajectory size under {self.required_keys()}, got "
                f"{[tuple(s.shape) for s in stacks]}."
            )
        slices = move(torch.cat([s.flatten(0, 1) for s in stacks[:-1]]).float())
        labels = move(stacks[-1].flatten(0, 1).float()).repeat(len(self.image_keys), 1, 1, 1)
        return slices, torch.cat([slices, labels], dim=1)


class RenderOnDevice(PrepareBatch):
    """A ``prepare_batch`` that renders the slices on the engine's device first, then hands the batch to
    ``prepare_batch``: the volume crops under ``keys`` that the batch holds (from
    :class:`~monai_slicenav.transforms.CropToSlicesd`, collated by
    :func:`~monai_slicenav.transforms.collate_volume_crops`) and the poses under ``pose_key`` are moved to the device
    and rendered there, one ``grid_sample`` call per key for the whole batch, into the (B, T, C, h, w) stacks that
    :class:`~monai_slicenav.transforms.RenderSlicesd` would have made in the input chain.

    Args:
        prepare_batch: the ``prepare_batch`` of the rendered batch (e.g. :class:`PrepareSlices`).
        spatial_size: slice size (h, w) in pixels.
        keys: keys of the volume crops. Defaults to ``("image",)``.
        mode: one per key or one for all, ``{"bilinear", "nearest"}``.
        pose_key: key of the packed (B, T, 13) poses. Defaults to ``"poses"``.

    Raises:
        KeyError: when the batch has no poses (a chain without :class:`~monai_slicenav.transforms.CropToSlicesd`,
            e.g. a 3D bundle, cannot render on the device).
    """

    def __init__(
        self,
        prepare_batch: Callable,
        spatial_size: Sequence[int] | int,
        keys: Sequence[str] | str = ("image",),
        mode: Sequence[str] | str = "bilinear",
        pose_key: str = "poses",
    ) -> None:
        self.prepare_batch = prepare_batch
        self.spatial_size = spatial_size
        self.key_modes = channel_modes(keys, mode)
        self.pose_key = pose_key

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs,
    ) -> tuple:
        present = [(key, mode) for key, mode in self.key_modes if key in batchdata]
        if self.pose_key not in batchdata or not present:
            raise KeyError(
                f"RenderOnDevice: the batch has no poses under {self.pose_key!r} or none of the volumes "
                f"{[k for k, _ in self.key_modes]} (keys: {list(batchdata)}); render_on_device needs a slice input "
                "chain (CropToSlicesd)."
            )
        batch = dict(batchdata)
        poses = Pose.from_tensor(torch.as_tensor(batch[self.pose_key]).to(device=device, non_blocking=non_blocking))
        for key, mode in present:
            crops = batch[key]
            affine = crops.affine if crops.affine.ndim == 3 else crops.affine[None]
            volumes = torch.as_tensor(crops).to(device=device, non_blocking=non_blocking)
            batch[key] = render_slices(volumes, affine, poses, self.spatial_size, mode=mode)
        return self.prepare_batch(batch, device, non_blocking, **kwargs)
