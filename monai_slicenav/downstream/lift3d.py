"""Lift a 2D slice encoder to 3D: a MONAI ``FlexibleUNet`` backbone and a plain 3D feature extractor.

:class:`Lift3D` cuts a volume (B, C, X, Y, Z) into slices along ``axis``, encodes them in sub-cube windows of
``window`` consecutive slices (one encoder call per window, so peak activation memory is that of one window however
deep the volume; with ``frozen=True`` no graph is kept, while finetuning checkpoints each window), adds a learned
depth embedding (the slice's position inside its window, per pyramid level), and reassembles a 3D pyramid: level k
of the 2D encoder (in-plane stride 2^(k+1)) is reduced through-plane by a learned strided depthwise convolution
(initialised to the mean) to the same stride, so every level is isotropically downsampled, as U-Net decoders expect.
3D encoders (the static-volume baseline's) are used as they are.

:class:`SliceNavBackbone` is the ``monai.networks.blocks.BaseEncoder`` registered in MONAI's ``FLEXUNET_BACKBONE``
when ``monai_slicenav`` is imported::

    import monai_slicenav  # registers "slicenav-lift3d"
    from monai.networks.nets import FlexibleUNet

    net = FlexibleUNet(in_channels=1, out_channels=4, backbone="slicenav-lift3d", spatial_dims=3)
    report = net.encoder.load_encoder_weights("runs/aligned/encoder")  # an exported encoder; keys reported

``register_backbone(name, encoder_path)`` registers an exported encoder's architecture under a new name;
``FlexibleUNet(..., backbone=name, pretrained=True)`` then starts from its weights.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch
from monai.networks.blocks import BaseEncoder
from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..encoders import SliceEncoder, load_encoder, load_into, load_state_dict
from ..networks.tokenizer import TokenizerConfig

__all__ = ["Lift3D", "SliceNavBackbone", "register_backbone", "DEFAULT_BACKBONE"]

logger = logging.getLogger(__name__)

DEFAULT_BACKBONE = "slicenav-lift3d"


class Lift3D(nn.Module):
    """A 2D encoder (with ``pyramid`` and ``pyramid_channels``) applied to volumes in sub-cube windows.

    Args:
        encoder: an exported encoder (:mod:`monai_slicenav.encoders`); 3D encoders pass through.
        axis: the spatial axis (0, 1 or 2 of (X, Y, Z)) the slices are cut across.
        window: slices per sub-cube window (a multiple of the deepest level's stride, e.g. 8).
        frozen: keep the 2D encoder's weights fixed (no gradients, no stored activations); the depth embedding and
            the depth reduction still train.
    """

    def __init__(self, encoder: nn.Module, axis: int = 2, window: int = 8, frozen: bool = True) -> None:
        super().__init__()
        if axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0, 1 or 2 (a spatial axis of (X, Y, Z)), got {axis}.")
        self.encoder, self.axis, self.frozen = encoder, axis, frozen
        self.channels = tuple(encoder.pyramid_channels)
        self.strides = tuple(2 ** (k + 1) for k in range(len(self.channels)))
        self.volumetric = getattr(encoder, "spatial_dims", 2) == 3
        if not self.volumetric and (window < 1 or window % self.strides[-1]):
            raise ValueError(f"window must be a positive multiple of {self.strides[-1]}, got {window}.")
        self.window = window
        if frozen:
            encoder.requires_grad_(False)
        self.depth_embedding = nn.ParameterList(nn.Parameter(torch.zeros(window, c)) for c in self.channels)
        self.depth_reduce = nn.ModuleList(
            nn.Conv3d(c, c, kernel_size=(s, 1, 1), stride=(s, 1, 1), groups=c, bias=False)
            for c, s in zip(self.channels, self.strides, strict=True)
        )
        for conv, s in zip(self.depth_reduce, self.strides, strict=True):
            nn.init.constant_(conv.weight, 1.0 / s)

    def train(self, mode: bool = True) -> Lift3D:
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def _encode_window(self, slices: torch.Tensor) -> list[torch.Tensor]:
        if self.frozen:
            with torch.no_grad():
                return self.encoder.pyramid(slices)
        if torch.is_grad_enabled():
            return list(checkpoint(lambda s: tuple(self.encoder.pyramid(s)), slices, use_reentrant=False))
        return self.encoder.pyramid(slices)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Volumes (B, C, X, Y, Z) -> 3D features per level, (B, c_k, X / 2^(k+1), Y / 2^(k+1), Z / 2^(k+1)).

        Sides are padded (zeros, at the end) to multiples of the deepest stride and the outputs cut back to
        ``ceil(side / stride)``.

        Raises:
            ValueError: when ``x`` is not 5-D.
        """
        if x.ndim != 5:
            raise ValueError(f"Lift3D expects volumes (B, C, X, Y, Z), got shape {tuple(x.shape)}.")
        if self.volumetric:
            return self.encoder.pyramid(x)
        b, sides = x.shape[0], x.shape[2:]
        stride = self.strides[-1]
        padded = [-(-s // stride) * stride for s in sides]
        padded[self.axis] = -(-sides[self.axis] // self.window) * self.window
        x = nn.functional.pad(
            x, [p for side, size in zip(reversed(sides), reversed(padded), strict=True) for p in (0, size - side)]
        )
        volume = x.movedim(2 + self.axis, 2)  # (B, C, depth, rows, cols)
        depth = volume.shape[2]
        levels: list[list[torch.Tensor]] = [[] for _ in self.channels]
        for start in range(0, depth, self.window):
            chunk = volume[:, :, start : start + self.window].movedim(2, 1).flatten(0, 1)  # (B * window, C, r, c)
            for k, features in enumerate(self._encode_window(chunk)):
                features = features.reshape(b, self.window, *features.shape[1:])  # (B, window, c_k, r_k, c_k)
                features = features + self.depth_embedding[k][None, :, :, None, None]
                levels[k].append(features)
        outputs = []
        for k, parts in enumerate(levels):
            stack = torch.cat(parts, dim=1).movedim(1, 2)  # (B, c_k, depth, r_k, c_k)
            reduced = self.depth_reduce[k](stack).movedim(2, 2 + self.axis)
            wanted = [-(-s // self.strides[k]) for s in sides]
            outputs.append(reduced[:, :, : wanted[0], : wanted[1], : wanted[2]])
        return outputs

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The coarsest level only (B, c, X / f, Y / f, Z / f): a plain 3D feature extractor, e.g. for
        ``sliding_window_inference`` (its output is the input zoomed by 1 / f)."""
        return self.forward(x)[-1]


class SliceNavBackbone(Lift3D, BaseEncoder):
    """A ``FlexibleUNet`` backbone from a monai_slicenav encoder (see the module docstring).

    Args:
        spatial_dims: 3 (lifted through :class:`Lift3D`) or 2 (the 2D encoder as it is, for 2D U-Nets).
        in_channels: must equal the encoder's input channels.
        pretrained: load the weights of ``encoder_path`` (else only its architecture is used, randomly
            initialised).
        encoder_path: an exported encoder folder; empty: the default tokenizer encoder architecture.
        axis, window, frozen: as in :class:`Lift3D`.

    Raises:
        ValueError: for a channel or dimension mismatch, or ``pretrained`` without ``encoder_path``.
    """

    names: tuple[str, ...] = (DEFAULT_BACKBONE,)
    parameters_by_name: tuple[dict, ...] = (
        {"spatial_dims": 3, "in_channels": 1, "pretrained": False, "encoder_path": ""},
    )
    channels_by_name: tuple[tuple[int, ...], ...] = (TokenizerConfig().channels,)

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        pretrained: bool = False,
        encoder_path: str | os.PathLike = "",
        axis: int = 2,
        window: int = 8,
        frozen: bool = False,
    ) -> None:
        if pretrained and not encoder_path:
            raise ValueError("pretrained=True needs an encoder_path (register_backbone(name, encoder_path)).")
        if encoder_path:
            encoder = load_encoder(encoder_path)
            if not pretrained:
                encoder = type(encoder)(**encoder.arguments())  # the architecture, randomly initialised
        else:
            encoder = SliceEncoder(TokenizerConfig())
        expected = _in_channels(encoder)
        if in_channels != expected:
            raise ValueError(f"The encoder reads {expected} input channel(s), got in_channels={in_channels}.")
        encoder_dims = getattr(encoder, "spatial_dims", 2)
        if spatial_dims not in (2, 3) or (spatial_dims == 2 and encoder_dims == 3):
            raise ValueError(f"spatial_dims must be 3, or 2 for a 2D encoder; got {spatial_dims} ({encoder_dims}D).")
        super().__init__(encoder, axis=axis, window=window, frozen=frozen)
        self.spatial_dims = spatial_dims

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.spatial_dims == 2:
            return self.encoder.pyramid(x)
        return super().forward(x)

    def load_encoder_weights(self, path: str | os.PathLike, strict: bool = True) -> dict[str, list[str]]:
        """Load an exported encoder's weights (``weights_only=True``) into this backbone's encoder.

        Returns:
            ``{"loaded": [...], "missing": [...], "unexpected": [...]}`` key names.

        Raises:
            ValueError: for mismatched shapes, or missing/unexpected keys when ``strict`` (named).
        """
        weights = Path(path) / "encoder.pt" if Path(path).is_dir() else Path(path)
        return load_into(self.encoder, load_state_dict(weights), strict, str(weights))

    @classmethod
    def get_encoder_parameters(cls) -> list[dict]:
        return [dict(p) for p in cls.parameters_by_name]

    @classmethod
    def num_channels_per_output(cls) -> list[tuple[int, ...]]:
        return list(cls.channels_by_name)

    @classmethod
    def num_outputs(cls) -> list[int]:
        return [len(c) for c in cls.channels_by_name]

    @classmethod
    def get_encoder_names(cls) -> list[str]:
        return list(cls.names)


def _in_channels(encoder: nn.Module) -> int:
    config = getattr(encoder, "config", None) or encoder.tokenizer_config
    return int(config.in_channels)


def register_backbone(
    name: str, encoder_path: str | os.PathLike, axis: int = 2, window: int = 8, frozen: bool = False
) -> str:
    """Register an exported encoder as a ``FlexibleUNet`` backbone called ``name``; with ``pretrained=True`` the
    U-Net starts from its weights. Returns ``name``.

    Raises:
        FileNotFoundError/ValueError: when the export cannot be read (see :func:`~monai_slicenav.export.load_encoder`).
    """
    encoder = load_encoder(encoder_path)
    parameters = {
        "spatial_dims": 3,
        "in_channels": _in_channels(encoder),
        "pretrained": False,
        "encoder_path": str(encoder_path),
        "axis": axis,
        "window": window,
        "frozen": frozen,
    }
    backbone: Callable = type(
        "SliceNavBackbone_" + "".join(ch if ch.isalnum() else "_" for ch in name),
        (SliceNavBackbone,),
        {"names": (name,), "parameters_by_name": (parameters,), "channels_by_name": (tuple(encoder.pyramid_channels),)},
    )
    FLEXUNET_BACKBONE.register_class(backbone)
    logger.info("registered FlexibleUNet backbone %r from %s", name, encoder_path)
    return name


FLEXUNET_BACKBONE.register_class(SliceNavBackbone)
