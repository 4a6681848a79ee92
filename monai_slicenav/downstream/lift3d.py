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
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from monai.networks.blocks import BaseEncoder
from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..encoders import (
    InputCheck,
    SliceEncoder,
    expand_input_channels,
    input_channels,
    input_contract,
    load_encoder,
    load_into,
    load_state_dict,
)
from ..geometry import compose_actions, invert_action, relative
from ..networks.tokenizer import TokenizerConfig
from ..volume import voxel_slice_pose

__all__ = ["CONTEXT_MODES", "Lift3D", "SliceNavBackbone", "register_backbone", "DEFAULT_BACKBONE"]

logger = logging.getLogger(__name__)

DEFAULT_BACKBONE = "slicenav-lift3d"
CONTEXT_MODES = ("none", "causal", "bidirectional")  # how a context encoder sees the slices of a volume


class Lift3D(nn.Module):
    """A 2D encoder (with ``pyramid`` and ``pyramid_channels``) applied to volumes in sub-cube windows.

    Args:
        encoder: an exported encoder (:mod:`monai_slicenav.encoders`); 3D encoders pass through.
        axis: the spatial axis (0, 1 or 2 of (X, Y, Z)) the slices are cut across.
        window: slices per sub-cube window (a multiple of the deepest level's stride, e.g. 8).
        frozen: keep the 2D encoder's weights fixed (no gradients, no stored activations); the depth embedding and
            the depth reduction still train.
        context: how a context encoder (``ContextEncoder``: it has ``context_features``) sees the slices:
            ``"none"`` one slice at a time; ``"causal"`` each slice in the context of the slices before it, as a
            trajectory whose actions are the exact steps between the slices it cuts (``relative`` of their poses,
            from the volume's affine: one voxel along the normal); ``"bidirectional"`` the mean of that and the same
            over the reversed slices (the inverse actions). The trunk runs over the whole depth in trajectories of
            its ``max_context`` slices overlapping by half, so a window's first slice has context too.
        context_stride: with a context, the trajectories hold every ``context_stride``-th slice (steps of that many
            voxels, nearer the pretraining regime's step sizes than one voxel); each residue of the stride forms its
            own trajectories. Defaults to 1 (neighbouring slices).

    Raises:
        ValueError: for a bad axis, window or context, or a context mode with an encoder that has no trunk.
    """

    def __init__(
        self,
        encoder: nn.Module,
        axis: int = 2,
        window: int = 8,
        frozen: bool = True,
        context: str = "none",
        context_stride: int = 1,
    ) -> None:
        super().__init__()
        if axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0, 1 or 2 (a spatial axis of (X, Y, Z)), got {axis}.")
        if context not in CONTEXT_MODES:
            raise ValueError(f"context must be one of {CONTEXT_MODES}, got {context!r}.")
        if context != "none" and not hasattr(encoder, "context_features"):
            raise ValueError(
                f"context={context!r} needs a context encoder (a dynamics variant's encoder), got "
                f"{type(encoder).__name__}; use context='none'."
            )
        if int(context_stride) < 1:
            raise ValueError(f"context_stride must be >= 1, got {context_stride}.")
        self.encoder, self.axis, self.frozen, self.context = encoder, axis, frozen, context
        self.input_check = InputCheck(input_contract(encoder), type(self).__name__)  # warns once on foreign inputs
        self.context_stride = int(context_stride)
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

    def _run(self, function: Callable, *inputs: torch.Tensor):
        """``function(*inputs)`` without a graph (frozen), checkpointed (finetuning), or plainly (no grad mode)."""
        if self.frozen:
            with torch.no_grad():
                return function(*inputs)
        if torch.is_grad_enabled():
            return checkpoint(function, *inputs, use_reentrant=False)
        return function(*inputs)

    def _pyramid(self, slices: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.encoder.pyramid(slices))

    def _stages_and_latents(self, slices: torch.Tensor) -> tuple[torch.Tensor, ...]:
        stages, latents = self.encoder.slice_pyramid(slices)
        return (*stages, latents)

    def slice_action(self, x: torch.Tensor) -> torch.Tensor:
        """The action (7,) from each slice the lift cuts across ``axis`` to the next: ``relative`` of their poses
        (:func:`~monai_slicenav.volume.voxel_slice_pose`), from the affine of ``x`` (a ``MetaTensor``; a plain
        tensor is taken as 1 mm voxels). The same for every pair of neighbours: one voxel along the normal.

        Raises:
            ValueError: when the in-plane voxels are not square (resample the volume first, e.g. ``Spacingd``).
        """
        affine = getattr(x, "affine", None)
        if affine is None:
            message = "Lift3D context: the input has no affine (not a MetaTensor); its voxels are taken as 1 mm."
            warnings.warn(message, stacklevel=2)
            affine = torch.eye(4)
        affine = torch.as_tensor(affine, dtype=torch.float64)
        affine = affine[0] if affine.ndim == 3 else affine
        shape = x.shape[2:]
        try:
            first, second = (voxel_slice_pose(affine, shape, self.axis, index, torch.float64)[0] for index in (0, 1))
        except ValueError as err:
            raise ValueError(f"context={self.context!r} needs the slices' exact poses: {err}") from err
        return relative(first, second).to(device=x.device, dtype=torch.float32)

    def _in_context(self, latents: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        """Causal trunk features (B, D, width, h, w) of a slice sequence's latents (B, D, d, h, w), ``step`` apart:
        trajectories of the trunk's ``max_context`` slices, each after the first starting half of one earlier, so
        every slice but the first few sees at least half that many slices before it."""
        length = self.encoder.max_context
        hop = max(1, length // 2)
        depth, pieces, done = latents.shape[1], [], 0
        while done < depth:
            start = max(0, done - (length - hop))
            stop = min(depth, start + length)
            actions = step.expand(latents.shape[0], stop - start - 1, step.shape[-1])
            pieces.append(self.encoder.context_features(latents[:, start:stop], actions)[:, done - start :])
            done = stop
        return torch.cat(pieces, dim=1)

    def _context_grid(self, latents: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        """Trunk features (B, D, width, h, w) of every slice in its context: slices ``context_stride`` apart form
        one trajectory (its action the composition of that many steps), each residue of the stride its own."""
        stride = self.context_stride
        stride_step = step
        for _ in range(stride - 1):
            stride_step = compose_actions(stride_step, step)
        grid = None
        for residue in range(min(stride, latents.shape[1])):
            sub = latents[:, residue::stride]
            features = self._run(self._in_context, sub, stride_step)
            if self.context == "bidirectional":
                backward = self._run(self._in_context, sub.flip(1), invert_action(stride_step)).flip(1)
                features = 0.5 * (features + backward)
            if grid is None:
                grid = features.new_zeros(latents.shape[0], latents.shape[1], *features.shape[2:])
            grid[:, residue::stride] = features
        return grid

    def slice_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-slice features of volumes (B, C, X, Y, Z) before the depth embedding and reduction: per level
        (B, c_k, depth, rows_k, cols_k), slices cut across ``axis`` (depth, padded to whole windows), rows and
        columns the other two axes in order (padded to multiples of the deepest stride). With a ``context``, the
        coarsest level's trunk features see the slices around each slice (see the class docstring).

        Raises:
            ValueError: when ``x`` is not 5-D, or a 3D encoder is given (it has no slices).
        """
        if x.ndim != 5 or self.volumetric:
            raise ValueError(f"slice_features takes volumes (B, C, X, Y, Z) and a 2D encoder, got {tuple(x.shape)}.")
        step = self.slice_action(x) if self.context != "none" else None
        sides = x.shape[2:]
        stride = self.strides[-1]
        padded = [-(-s // stride) * stride for s in sides]
        padded[self.axis] = -(-sides[self.axis] // self.window) * self.window
        x = nn.functional.pad(
            x, [p for side, size in zip(reversed(sides), reversed(padded), strict=True) for p in (0, size - side)]
        )
        volume = x.movedim(2 + self.axis, 2)  # (B, C, depth, rows, cols)
        b, depth = volume.shape[0], volume.shape[2]
        levels: list[list[torch.Tensor]] = [[] for _ in self.channels]
        latents = []
        for start in range(0, depth, self.window):
            chunk = volume[:, :, start : start + self.window].movedim(2, 1).flatten(0, 1)  # (B * window, C, r, c)
            if step is None:
                parts = list(self._run(self._pyramid, chunk))
            else:  # the stages before the trunk, and the latents the trunk will see in context
                *parts, latent = self._run(self._stages_and_latents, chunk)
                latents.append(latent.reshape(b, self.window, *latent.shape[1:]))
            for k, features in enumerate(parts):
                levels[k].append(features.reshape(b, self.window, *features.shape[1:]))  # (B, window, c_k, r_k, c_k)
        stacks = [torch.cat(parts, dim=1) for parts in levels]  # (B, depth, c_k, r_k, c_k)
        if step is not None:
            stacks[-1] = torch.cat([stacks[-1], self._context_grid(torch.cat(latents, dim=1), step)], dim=2)
        return [stack.movedim(1, 2) for stack in stacks]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Volumes (B, C, X, Y, Z) -> 3D features per level, (B, c_k, X / 2^(k+1), Y / 2^(k+1), Z / 2^(k+1)).

        Sides are padded (zeros, at the end) to multiples of the deepest stride and the outputs cut back to
        ``ceil(side / stride)``.

        Raises:
            ValueError: when ``x`` is not 5-D.
        """
        if x.ndim != 5:
            raise ValueError(f"Lift3D expects volumes (B, C, X, Y, Z), got shape {tuple(x.shape)}.")
        self.input_check(x)
        if self.volumetric:
            return self.encoder.pyramid(x)
        sides = x.shape[2:]
        outputs = []
        for k, stack in enumerate(self.slice_features(x)):  # (B, c_k, depth, r_k, c_k)
            repeats = stack.shape[2] // self.window
            position = self.depth_embedding[k].repeat(repeats, 1).T  # (c_k, depth): the slice's place in its window
            reduced = self.depth_reduce[k](stack + position[None, :, :, None, None]).movedim(2, 2 + self.axis)
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
        in_channels: the image channels; a single-channel encoder takes C > 1 through
            :func:`~monai_slicenav.encoders.expand_input_channels` (its first convolution averaged over them).
        pretrained: load the weights of ``encoder_path`` (else only its architecture is used, randomly
            initialised).
        encoder_path: an exported encoder folder; empty: the default tokenizer encoder architecture.
        axis, window, frozen, context, context_stride: as in :class:`Lift3D`.

    Raises:
        ValueError: for a channel or dimension mismatch, or ``pretrained`` without ``encoder_path``.
    """

    names: tuple[str, ...] = (DEFAULT_BACKBONE,)
    parameters_by_name: tuple[dict, ...] = (
        {"spatial_dims": 3, "in_channels": 1, "pretrained": False, "encoder_path": "", "context": "none"},
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
        context: str = "none",
        context_stride: int = 1,
    ) -> None:
        if pretrained and not encoder_path:
            raise ValueError("pretrained=True needs an encoder_path (register_backbone(name, encoder_path)).")
        if encoder_path:
            encoder = load_encoder(encoder_path)
            if not pretrained:
                encoder = type(encoder)(**encoder.arguments())  # the architecture, randomly initialised
        else:
            encoder = SliceEncoder(TokenizerConfig())
        expected = input_channels(encoder)
        if in_channels != expected and expected == 1:  # one contrast's weights on C contrasts (e.g. BraTS's four)
            encoder = expand_input_channels(encoder, in_channels)
            logger.info(
                "the single-channel encoder reads %d channels (first convolution averaged over them)", in_channels
            )
        elif in_channels != expected:
            raise ValueError(f"The encoder reads {expected} input channel(s), got in_channels={in_channels}.")
        encoder_dims = getattr(encoder, "spatial_dims", 2)
        if spatial_dims not in (2, 3) or (spatial_dims == 2 and encoder_dims == 3):
            raise ValueError(f"spatial_dims must be 3, or 2 for a 2D encoder; got {spatial_dims} ({encoder_dims}D).")
        super().__init__(encoder, axis, window, frozen, context, context_stride)
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


def register_backbone(
    name: str,
    encoder_path: str | os.PathLike,
    axis: int = 2,
    window: int = 8,
    frozen: bool = False,
    context: str = "none",
    context_stride: int = 1,
) -> str:
    """Register an exported encoder as a ``FlexibleUNet`` backbone called ``name``; with ``pretrained=True`` the
    U-Net starts from its weights (``axis``, ``window``, ``frozen``, ``context``, ``context_stride``: as in
    :class:`Lift3D`). Returns ``name``.

    Raises:
        FileNotFoundError/ValueError: when the export cannot be read (see :func:`~monai_slicenav.export.load_encoder`).
    """
    encoder = load_encoder(encoder_path)
    parameters = {
        "spatial_dims": 3,
        "in_channels": input_channels(encoder),
        "pretrained": False,
        "encoder_path": str(encoder_path),
        "axis": axis,
        "window": window,
        "frozen": frozen,
        "context": context,
        "context_stride": context_stride,
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
