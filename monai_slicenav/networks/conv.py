"""Convolutional encoder/decoder stacks from ``monai.networks.blocks``, shared by the 2D slice tokenizer and the 3D
static-volume baseline (so the two compared encoders have the same stages and widths)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution, ResidualUnit
from torch import nn

__all__ = ["conv_stage", "ConvEncoderNet", "ConvDecoderNet"]


def conv_stage(
    spatial_dims: int, in_ch: int, out_ch: int, num_res_units: int, norm: str, transposed: bool = False
) -> nn.Sequential:
    """One resolution stage: a (transposed) stride-2 convolution, then residual units at that resolution."""
    layers: list[nn.Module] = [
        Convolution(spatial_dims, in_ch, out_ch, strides=2, kernel_size=3, norm=norm, is_transposed=transposed)
    ]
    layers += [ResidualUnit(spatial_dims, out_ch, out_ch, norm=norm) for _ in range(num_res_units)]
    return nn.Sequential(*layers)


class ConvEncoderNet(nn.Module):
    """(B, C, *S) -> (B, latent, *S / 2 ** len(channels)): strided stages, then a 1x1 projection.

    :meth:`pyramid` returns every stage's output as well (the features a U-Net decoder consumes)."""

    def __init__(
        self, spatial_dims: int, in_channels: int, channels: Sequence[int], num_res_units: int, latent: int, norm: str
    ) -> None:
        super().__init__()
        widths = (in_channels, *channels)
        self.stages = nn.Sequential(
            *(conv_stage(spatial_dims, a, b, num_res_units, norm) for a, b in zip(widths, widths[1:], strict=False))
        )
        self.to_latent = Convolution(spatial_dims, channels[-1], latent, kernel_size=1, conv_only=True)

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each stage's output, finest first (strides 2, 4, ... 2 ** len(channels))."""
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_latent(self.stages(x))


class ConvDecoderNet(nn.Module):
    r"""(B, latent, \*S / 2 ** len(channels)) -> (B, C, \*S): the mirror of :class:`ConvEncoderNet`."""

    def __init__(
        self, spatial_dims: int, out_channels: int, channels: Sequence[int], num_res_units: int, latent: int, norm: str
    ) -> None:
        super().__init__()
        widths = tuple(reversed(tuple(channels)))
        self.from_latent = Convolution(spatial_dims, latent, widths[0], kernel_size=3, norm=norm)
        ups = [
            conv_stage(spatial_dims, a, b, num_res_units, norm, transposed=True)
            for a, b in zip(widths, widths[1:], strict=False)
        ]
        ups.append(conv_stage(spatial_dims, widths[-1], widths[-1], num_res_units, norm, transposed=True))
        self.stages = nn.Sequential(*ups)
        self.to_image = Convolution(spatial_dims, widths[-1], out_channels, kernel_size=1, conv_only=True)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.to_image(self.stages(self.from_latent(z)))
