"""The static-volume baseline: a small 3D convolutional masked autoencoder over volume crops.

MONAI's ``MaskedAutoEncoderViT`` was the first candidate; a convolutional MAE is used instead because (1) its encoder
has the same stages and widths as the slice tokenizer's encoder (:mod:`~monai_slicenav.networks.conv`), so the
comparison changes the pretraining signal and not the architecture, (2) it yields the multi-scale feature pyramid the
downstream U-Net decoders consume, and (3) it trains on CPU within the budgets of the comparison (a ViT-MAE over
16^3 patches does not). Masking happens on the data side (:func:`mask_volumes`), so the network maps a tensor to a
tensor like any MONAI autoencoder.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .conv import ConvDecoderNet, ConvEncoderNet

__all__ = ["VolumeMAEConfig", "VolumeMAE", "MaskedReconstructionLoss", "mask_volumes"]


@dataclass
class VolumeMAEConfig:
    """Hyper-parameters of :class:`VolumeMAE` (stored with exports)."""

    in_channels: int = 1
    channels: tuple[int, ...] = (32, 64, 128)  # encoder widths; each stage halves every side
    num_res_units: int = 1
    latent_dim: int = 8  # channels of the bottleneck
    norm: str = "INSTANCE"

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        if self.in_channels < 1 or not self.channels or min(self.channels) < 1 or self.latent_dim < 1:
            raise ValueError(f"positive in_channels, channels and latent_dim required, got {self}.")

    @property
    def downsample(self) -> int:
        return 2 ** len(self.channels)

    def to_dict(self) -> dict:
        return asdict(self)


class VolumeMAE(nn.Module):
    """(B, C, D, H, W) masked crops -> (B, C, D, H, W) reconstructions (sides multiples of ``2 ** len(channels)``).
    Scriptable (``torch.jit.script``, the model zoo's TorchScript export)."""

    __jit_ignored_attributes__ = ["config"]  # a dataclass TorchScript cannot type; forward reads the copies below

    def __init__(self, config: VolumeMAEConfig | None = None, **kwargs) -> None:
        super().__init__()
        if config is not None and kwargs:
            raise TypeError("Give either a VolumeMAEConfig or keyword arguments, not both.")
        self.config = cfg = config if config is not None else VolumeMAEConfig(**kwargs)
        self.downsample, self.in_channels = cfg.downsample, cfg.in_channels
        self.encoder = ConvEncoderNet(3, cfg.in_channels, cfg.channels, cfg.num_res_units, cfg.latent_dim, cfg.norm)
        self.decoder = ConvDecoderNet(3, cfg.in_channels, cfg.channels, cfg.num_res_units, cfg.latent_dim, cfg.norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.downsample
        fits = x.ndim == 5 and x.shape[1] == self.in_channels
        for side in x.shape[2:]:
            fits = fits and side % f == 0
        if not fits:
            raise ValueError(
                f"Expected crops (B, {self.in_channels}, D, H, W) with sides multiples of {f}, got shape {x.shape}."
            )
        return self.decoder(self.encoder(x))


def mask_volumes(
    volumes: torch.Tensor, ratio: float = 0.6, patch: int = 8, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hide a random ``ratio`` of the ``patch^3`` cubes of each volume (B, C, D, H, W) (sides multiples of
    ``patch``). Returns the masked volumes (hidden cubes set to 0) and the mask (B, 1, D, H, W), 1 where hidden.

    Raises:
        ValueError: for a ratio outside (0, 1) or sides that ``patch`` does not divide.
    """
    if not 0 < ratio < 1 or volumes.ndim != 5 or any(s % patch for s in volumes.shape[2:]):
        raise ValueError(
            f"Need 0 < ratio < 1 and volumes (B, C, D, H, W) with sides multiples of {patch}; got ratio {ratio}, "
            f"shape {tuple(volumes.shape)}."
        )
    b = volumes.shape[0]
    grid = [s // patch for s in volumes.shape[2:]]
    scores = torch.rand(b, grid[0] * grid[1] * grid[2], generator=generator).to(volumes.device)
    hidden = int(round(ratio * scores.shape[1]))
    order = scores.argsort(dim=1)
    cubes = torch.zeros_like(scores)
    cubes.scatter_(1, order[:, :hidden], 1.0)
    mask = cubes.reshape(b, 1, *grid)
    for dim in (2, 3, 4):
        mask = mask.repeat_interleave(patch, dim=dim)
    return volumes * (1 - mask), mask


class MaskedReconstructionLoss(nn.Module):
    """L1 on hidden voxels plus ``visible_weight`` times L1 on visible ones. ``target`` is the volume with the mask
    as its last channel (B, C + 1, D, H, W), as :class:`~monai_slicenav.workflows.PrepareMaskedVolumes` builds it."""

    def __init__(self, visible_weight: float = 0.1) -> None:
        super().__init__()
        if visible_weight < 0:
            raise ValueError(f"visible_weight must be >= 0, got {visible_weight}.")
        self.visible_weight = float(visible_weight)

    def forward(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        volumes, mask = target[:, :-1], target[:, -1:]
        error = (recon - volumes).abs()
        hidden = (error * mask).sum() / (mask.sum() * volumes.shape[1]).clamp(min=1)
        visible = (error * (1 - mask)).sum() / ((1 - mask).sum() * volumes.shape[1]).clamp(min=1)
        return hidden + self.visible_weight * visible
