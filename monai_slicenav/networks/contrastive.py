"""Multi-positive voxel contrastive learning on the synthetic engine: several appearances of one label map give
voxels that must map to the same feature when they share a label and apart when they do not (supervised
contrastive over sampled voxels, as anatomix trains its 3D UNet).

MONAI's ``ContrastiveLoss`` is SimCLR's NT-Xent: one positive per sample (the same item in the other view). Here
every voxel of the same label, in any view, is a positive, so the loss is written out (Khosla et al., Supervised
Contrastive Learning, NeurIPS 2020, the "L_out" form) over voxels sampled per label.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .conv import ConvEncoderNet
from .tokenizer import TokenizerLoss
from .volume_mae import VolumeMAEConfig

__all__ = [
    "sample_voxels_per_label",
    "supervised_contrastive",
    "VoxelContrastiveLoss",
    "PyramidContrastiveLoss",
    "TokenizerContrastiveLoss",
    "VoxelContrastiveNet",
]


def sample_voxels_per_label(labels: torch.Tensor, per_label: int, generator: torch.Generator | None = None) -> tuple:
    """Up to ``per_label`` voxels of every label of a (X, Y, Z) (or any-shaped) integer map, chosen at random: the
    flat voxel indices and their labels. Which voxels a label gets depends only on where that label is (a random
    score per voxel, the lowest scores of each label), so renaming the labels picks the same voxels.

    Raises:
        ValueError: for ``per_label`` < 1 or a label map that is not integer-valued.
    """
    if per_label < 1:
        raise ValueError(f"per_label must be >= 1, got {per_label}.")
    if labels.is_floating_point():
        raise ValueError(f"labels must be integers, got {labels.dtype}.")
    flat = labels.reshape(-1)
    score = torch.rand(flat.numel(), generator=generator, device="cpu").to(flat.device)
    indices = []
    for value in torch.unique(flat):
        where = torch.nonzero(flat == value).flatten()
        keep = where[torch.argsort(score[where])[:per_label]]
        indices.append(keep)
    chosen = torch.cat(indices)
    return chosen, flat[chosen]


def supervised_contrastive(features: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """The supervised-contrastive loss of ``features`` (N, C) with ``labels`` (N,): for every anchor with at least
    one positive (another sample of its label), minus the mean over its positives of the log-softmax of the cosine
    similarity / ``temperature`` over all other samples; averaged over those anchors. Zero when no anchor has a
    positive."""
    unit = F.normalize(features.float(), dim=1)
    logits = unit @ unit.T / temperature
    self_mask = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive = (labels[:, None] == labels[None, :]) & ~self_mask
    counts = positive.sum(dim=1)
    anchors = counts > 0
    if not bool(anchors.any()):
        return features.sum() * 0.0
    mean_log_prob = log_prob.masked_fill(~positive, 0.0).sum(dim=1)[anchors] / counts[anchors]
    return -mean_log_prob.mean()


class VoxelContrastiveLoss(nn.Module):
    """Multi-positive voxel contrastive loss over appearances of the same label maps.

    ``forward(views, labels)``: ``views`` a sequence of V feature maps (B, C, X, Y, Z) of the same B label maps
    painted V times (same geometry, different appearance), ``labels`` (B, 1, X, Y, Z) or (B, X, Y, Z); or 2D maps
    (B, C, h, w) of slices with labels (B, 1, h, w) or (B, h, w). For every
    volume, ``per_label`` voxels of each label are sampled (the same voxels in every view), and the
    supervised-contrastive loss (:func:`supervised_contrastive`) is taken over the V x sampled features: the same
    label in any view is a positive, another label a negative. Averaged over the batch. Invariant to renaming the
    labels.

    Args:
        temperature: softmax temperature of the cosine similarities. Defaults to 0.1.
        per_label: voxels sampled per label and volume. Defaults to 32.
        seed: seeds the voxel sampling (one generator, advanced at every call); None: torch's global generator.
        fixed_sampling: draw the voxels from ``seed`` afresh at every call, so the same input always gives the same
            value (for validation metrics). Defaults to False.
    """

    def __init__(
        self, temperature: float = 0.1, per_label: int = 32, seed: int | None = 0, fixed_sampling: bool = False
    ) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        if fixed_sampling and seed is None:
            raise ValueError("fixed_sampling needs a seed.")
        self.temperature = float(temperature)
        self.per_label = int(per_label)
        self.seed, self.fixed_sampling = seed, bool(fixed_sampling)
        self.generator = None if seed is None else torch.Generator().manual_seed(int(seed))

    def forward(self, views: Sequence[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        views = list(views)
        if len(views) < 2:
            raise ValueError(f"need at least two appearances of the same label maps, got {len(views)}.")
        shape = views[0].shape
        if any(v.shape != shape for v in views) or len(shape) not in (4, 5):
            raise ValueError(
                f"views must be (B, C, X, Y, Z) or (B, C, h, w) of one shape, got {[tuple(v.shape) for v in views]}."
            )
        labels = labels[:, 0] if labels.ndim == len(shape) else labels
        if labels.shape != (shape[0], *shape[2:]):
            raise ValueError(f"labels {tuple(labels.shape)} do not match the views' grid {tuple(shape)}.")
        if self.fixed_sampling:
            self.generator.manual_seed(int(self.seed))
        losses = []
        for b in range(shape[0]):
            index, sampled = sample_voxels_per_label(labels[b].long(), self.per_label, self.generator)
            features = torch.cat([v[b].flatten(1)[:, index].T for v in views])  # (V * N, C)
            losses.append(supervised_contrastive(features, sampled.repeat(len(views)), self.temperature))
        return torch.stack(losses).mean()


class PyramidContrastiveLoss(nn.Module):
    r""":class:`VoxelContrastiveLoss` on the finest levels of an encoder pyramid, for a batch that stacks ``views``
    appearances of the same label maps (view-major: all volumes of view 0, then of view 1, ...).

    ``forward(pyramid, labels)``: ``pyramid`` the encoder's multi-scale features of the stacked batch (V * B, C_l,
    \*S_l), finest first; ``labels`` (B, 1, X, Y, Z) (or, for a 2D encoder's pyramid, (B, 1, h, w)). Each level's
    loss uses the label map taken at the level's voxel centres (nearest); the levels' losses are averaged.

    Args:
        views: appearances per label map in the batch. Defaults to 2.
        levels: how many of the finest pyramid levels are trained. Defaults to 2 (strides 2 and 4).
        temperature, per_label, seed, fixed_sampling: as in :class:`VoxelContrastiveLoss`.
    """

    def __init__(
        self,
        views: int = 2,
        levels: int = 2,
        temperature: float = 0.1,
        per_label: int = 32,
        seed: int | None = 0,
        fixed_sampling: bool = False,
    ) -> None:
        super().__init__()
        if views < 2 or levels < 1:
            raise ValueError(f"views must be >= 2 and levels >= 1, got {views} and {levels}.")
        self.views, self.levels = int(views), int(levels)
        self.loss = VoxelContrastiveLoss(temperature, per_label, seed, fixed_sampling)

    def forward(self, pyramid: Sequence[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        levels = list(pyramid)[: self.levels]
        labels = labels if labels.ndim == levels[0].ndim else labels[:, None]
        losses = []
        for level in levels:
            if level.shape[0] != self.views * labels.shape[0]:
                raise ValueError(
                    f"expected {self.views} views of {labels.shape[0]} volumes stacked, got {level.shape[0]} volumes."
                )
            coarse = F.interpolate(labels.float(), size=level.shape[2:], mode="nearest").long()
            losses.append(self.loss(level.chunk(self.views), coarse))
        return torch.stack(losses).mean()


class TokenizerContrastiveLoss(nn.Module):
    """The tokenizer's reconstruction loss plus ``weight`` times :class:`PyramidContrastiveLoss` on its encoder's
    finest feature maps: two appearances of the same slices (one trajectory rendered from two random paintings of
    one synthetic label map) must give the same features where they share a label and different ones elsewhere.

    ``forward(recon, target)``: ``recon`` the tokenizer's reconstruction of the stacked appearances (V * N, C, h,
    w), view-major; ``target`` (V * N, C + 1, h, w): the slices with their label slice as the last channel, as
    :class:`~monai_slicenav.workflows.PrepareSliceAppearances` makes them. The encoder's pyramid is taken from
    ``encoder`` (the tokenizer's own, shared by reference) on the target slices.

    Args:
        encoder: the tokenizer's encoder (``tokenizer.encoder``), whose ``pyramid`` the contrastive term trains.
        weight: weight of the contrastive term (0: reconstruction only).
        views: appearances stacked per slice. Defaults to 2.
        levels, temperature, per_label, seed: as in :class:`PyramidContrastiveLoss`.
        pixel_loss, ssim_weight: as in :class:`~monai_slicenav.networks.TokenizerLoss`.

    Raises:
        ValueError: for a negative weight.
    """

    def __init__(
        self,
        encoder: nn.Module,
        weight: float = 0.1,
        views: int = 2,
        levels: int = 2,
        temperature: float = 0.1,
        per_label: int = 16,
        seed: int | None = 0,
        pixel_loss: str = "l1",
        ssim_weight: float = 0.2,
    ) -> None:
        super().__init__()
        if weight < 0:
            raise ValueError(f"weight must be >= 0, got {weight}.")
        self.encoder = encoder  # the tokenizer's own module: the network's checkpoint saves its weights
        self.weight = float(weight)
        self.reconstruction = TokenizerLoss(pixel_loss, ssim_weight)
        self.contrastive = PyramidContrastiveLoss(views, levels, temperature, per_label, seed)

    def forward(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        slices, labels = target[:, :-1], target[:, -1:]
        loss = self.reconstruction(recon, slices)
        if self.weight > 0:
            first_view = labels[: len(labels) // self.contrastive.views].round().long()
            loss = loss + self.weight * self.contrastive(self.encoder.pyramid(slices), first_view)
        return loss


class VoxelContrastiveNet(nn.Module):
    """The 3D encoder trained with :class:`PyramidContrastiveLoss`: the static baseline's convolutional encoder
    (its :class:`~monai_slicenav.networks.VolumeMAEConfig`, so it exports as the same ``slicenav_volume_encoder``),
    whose forward returns the multi-scale pyramid (strides 2, 4, ...) the loss reads.

    Args:
        config: the encoder's :class:`VolumeMAEConfig` (or its fields, as keyword arguments).
    """

    def __init__(self, config: VolumeMAEConfig | None = None, **kwargs) -> None:
        super().__init__()
        self.config = config if config is not None else VolumeMAEConfig(**kwargs)
        cfg = self.config
        self.encoder = ConvEncoderNet(3, cfg.in_channels, cfg.channels, cfg.num_res_units, cfg.latent_dim, cfg.norm)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f = self.config.downsample
        if x.ndim != 5 or x.shape[1] != self.config.in_channels or any(s % f for s in x.shape[2:]):
            raise ValueError(
                f"Expected volumes (B, {self.config.in_channels}, D, H, W) with sides multiples of {f}, "
                f"got {tuple(x.shape)}."
            )
        return self.encoder.pyramid(x)
