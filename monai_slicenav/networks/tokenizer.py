"""Stage 1: a 2D convolutional slice tokenizer (encoder -> spatial latent grid -> quantizer -> decoder).

A slice (B, C, h, w) becomes a grid of latent tokens (B, d, h / f, w / f) with ``f = 2 ** len(channels)``;
the default quantizer is FSQ (:class:`~monai_slicenav.networks.quantizer.FSQ`), ``quantizer="none"`` keeps
continuous latents. Built from ``monai.networks.blocks`` (``Convolution``, ``ResidualUnit``) through
:mod:`~monai_slicenav.networks.conv`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from monai.losses import SSIMLoss
from torch import nn

from .conv import ConvDecoderNet, ConvEncoderNet
from .quantizer import FSQ

__all__ = ["TokenizerConfig", "SliceEncoderNet", "SliceDecoderNet", "SliceTokenizer", "TokenizerLoss"]

QUANTIZERS = ("fsq", "none")


@dataclass
class TokenizerConfig:
    """Hyper-parameters of :class:`SliceTokenizer` (stored with every checkpoint and export)."""

    in_channels: int = 1  # image channels of a slice
    channels: tuple[int, ...] = (32, 64, 128)  # encoder widths; each stage halves h and w, so f = 2 ** len
    num_res_units: int = 1  # residual units per stage
    quantizer: str = "fsq"  # "fsq" or "none" (continuous latents)
    fsq_levels: tuple[int, ...] = (8, 5, 5, 5)  # FSQ levels; the latent dim d is their count
    latent_dim: int = 8  # d when quantizer == "none"
    norm: str = "INSTANCE"  # MONAI norm name for every block

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        self.fsq_levels = tuple(int(level) for level in self.fsq_levels)
        if self.in_channels < 1 or not self.channels or min(self.channels) < 1 or self.num_res_units < 0:
            raise ValueError(
                f"in_channels >= 1, non-empty positive channels and num_res_units >= 0 required, got {self}."
            )
        if self.quantizer not in QUANTIZERS:
            raise ValueError(f"quantizer must be one of {QUANTIZERS}, got {self.quantizer!r}.")

    @property
    def latent_channels(self) -> int:
        """d: channels of the latent token grid."""
        return len(self.fsq_levels) if self.quantizer == "fsq" else self.latent_dim

    @property
    def downsample(self) -> int:
        """f: the slice size divided by the token grid size."""
        return 2 ** len(self.channels)

    def to_dict(self) -> dict:
        return asdict(self)


class SliceEncoderNet(ConvEncoderNet):
    """(B, C, h, w) slices -> (B, d, h / f, w / f) continuous latents (before quantization)."""

    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__(2, cfg.in_channels, cfg.channels, cfg.num_res_units, cfg.latent_channels, cfg.norm)


class SliceDecoderNet(ConvDecoderNet):
    """(B, d, h / f, w / f) latents -> (B, C, h, w) slices."""

    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__(2, cfg.in_channels, cfg.channels, cfg.num_res_units, cfg.latent_channels, cfg.norm)


class SliceTokenizer(nn.Module):
    """Encoder, quantizer and decoder of 2D slices.

    Args:
        config: a :class:`TokenizerConfig`, or its fields as keyword arguments (e.g. from a bundle YAML).

    ``forward`` returns the reconstruction only (one tensor in, one out, as MONAI trainers, inferers and
    ``verify_net_in_out`` expect); :meth:`encode` and :meth:`decode` expose the tokens.

    Example::

        tokenizer = SliceTokenizer(channels=(32, 64, 128), fsq_levels=(8, 5, 5, 5))
        tokens = tokenizer.encode(torch.rand(4, 1, 128, 128))  # (4, 4, 16, 16) FSQ codes
        recon = tokenizer.decode(tokens)  # (4, 1, 128, 128), the same as tokenizer(slices)
    """

    def __init__(self, config: TokenizerConfig | None = None, **kwargs) -> None:
        super().__init__()
        if config is not None and kwargs:
            raise TypeError("Give either a TokenizerConfig or keyword arguments, not both.")
        self.config = config if config is not None else TokenizerConfig(**kwargs)
        self.encoder = SliceEncoderNet(self.config)
        self.quantizer = FSQ(self.config.fsq_levels) if self.config.quantizer == "fsq" else nn.Identity()
        self.decoder = SliceDecoderNet(self.config)

    def _check(self, x: torch.Tensor) -> None:
        f = self.config.downsample
        if x.ndim != 4 or x.shape[1] != self.config.in_channels or x.shape[2] % f or x.shape[3] % f:
            raise ValueError(
                f"Expected slices (B, {self.config.in_channels}, h, w) with h and w multiples of {f}, "
                f"got shape {tuple(x.shape)}."
            )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> quantized tokens (B, d, h / f, w / f) (continuous when ``quantizer="none"``)."""
        self._check(x)
        return self.quantizer(self.encoder(x))

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, d, h / f, w / f) tokens -> (B, C, h, w) slices."""
        return self.decoder(tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction (B, C, h, w) of (B, C, h, w) slices through their tokens."""
        return self.decode(self.encode(x))


class TokenizerLoss(nn.Module):
    """Reconstruction loss: L1 or MSE, plus ``ssim_weight`` times MONAI's ``SSIMLoss`` (intensities in [0, 1]).

    Raises:
        ValueError: for an unknown ``pixel_loss`` or a negative weight.
    """

    def __init__(self, pixel_loss: str = "l1", ssim_weight: float = 0.2) -> None:
        super().__init__()
        losses = {"l1": nn.L1Loss(), "mse": nn.MSELoss()}
        if pixel_loss not in losses or ssim_weight < 0:
            raise ValueError(f"pixel_loss must be 'l1' or 'mse' and ssim_weight >= 0, got {pixel_loss}, {ssim_weight}.")
        self.pixel = losses[pixel_loss]
        self.ssim_weight = float(ssim_weight)
        self.ssim = SSIMLoss(spatial_dims=2, data_range=1.0, win_size=7) if ssim_weight > 0 else None

    def forward(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.pixel(recon, target)
        if self.ssim is not None:
            loss = loss + self.ssim_weight * self.ssim(recon, target)
        return loss
