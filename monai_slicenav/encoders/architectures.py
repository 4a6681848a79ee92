"""The encoders every pretraining variant exports (see :mod:`monai_slicenav.encoders.record` for the file format).

* :class:`SliceEncoder` (``slice_tokenizer_encoder``): the stage-1 tokenizer's encoder, 2D slices -> latent grid.
* :class:`ContextEncoder` (``slicenav_context_encoder``): tokenizer encoder + the stage-2 dynamics trunk over a short
  trajectory; a single slice is a trajectory of one step.
* :class:`VolumeEncoder` (``slicenav_volume_encoder``): the static-volume baseline's 3D encoder.

Each has ``architecture``, ``spatial_dims``, ``out_channels``, ``pyramid(x)`` (multi-scale features at strides 2, 4,
8, with ``pyramid_channels``), ``arguments()`` (its constructor arguments, written to ``encoder.json``) and
``from_pretrained(path)``; and the one mapping between training networks and exports: ``cut_from`` (the training
network classes it is cut from), ``cut(network)`` and ``export_name`` (the folder a training run exports it to),
which :func:`encoders_of` and :func:`~monai_slicenav.encoders.trained.trained_network` read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

from ..networks.contrastive import VoxelContrastiveNet
from ..networks.conv import ConvEncoderNet
from ..networks.dynamics import DynamicsConfig, LatentDynamics
from ..networks.navigator import SliceNavigator
from ..networks.quantizer import FSQ
from ..networks.tokenizer import SliceEncoderNet, SliceTokenizer, TokenizerConfig
from ..networks.volume_mae import VolumeMAE, VolumeMAEConfig
from .record import ENCODER_ARCHITECTURES, load_encoder, register_architecture

__all__ = ["SliceEncoder", "ContextEncoder", "VolumeEncoder", "encoders_of"]


class _Exported(nn.Module):
    architecture = ""
    spatial_dims = 2
    export_name = "encoder"  # models/<export_name>/ of a training run
    cut_from: tuple[type[nn.Module], ...] = ()  # the training networks this encoder is cut from (each class with
    # training networks here defines ``cut(network)``: this encoder of one of them, weights copied)
    # TorchScript (the model zoo's export) compiles forward only: the config dataclass, the record's input spec and
    # the properties read from them stay Python
    __jit_ignored_attributes__ = ["config", "input_spec"]
    __jit_unused_properties__ = ["out_channels", "pyramid_channels"]

    @property
    def pyramid_channels(self) -> tuple[int, ...]:
        """Channels of :meth:`pyramid`'s outputs."""
        return self.config.channels

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Multi-scale features (B, C, *S): every encoder stage's output, at strides 2, 4, ... f."""
        return self.encoder.pyramid(x)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, strict: bool = True, map_location: str = "cpu") -> nn.Module:
        """Rebuild an exported encoder from a folder holding ``encoder.pt`` and ``encoder.json`` (or either file);
        see :func:`monai_slicenav.encoders.load_encoder` (weights loaded with ``weights_only=True``)."""
        return load_encoder(path, strict=strict, map_location=map_location)


def _tokenizer_config(config: TokenizerConfig | Mapping) -> TokenizerConfig:
    return config if isinstance(config, TokenizerConfig) else TokenizerConfig(**config)


@register_architecture
class SliceEncoder(_Exported):
    """The exported 2D slice encoder: (B, C, h, w) slices -> (B, d, h / f, w / f) latent features.

    ``quantize=True`` applies the tokenizer's FSQ (discrete tokens, as the dynamics model sees them); the default
    returns the continuous latents, the richer features for downstream heads.

    Args:
        config: the tokenizer's :class:`~monai_slicenav.networks.TokenizerConfig` (or its fields as a dict).
        quantize: return quantized tokens instead of continuous latents. Defaults to False.
    """

    architecture = "slice_tokenizer_encoder"
    cut_from = (SliceTokenizer, SliceNavigator)

    def __init__(self, config: TokenizerConfig | Mapping, quantize: bool = False) -> None:
        super().__init__()
        self.config = _tokenizer_config(config)
        self.encoder = SliceEncoderNet(self.config)
        if quantize and self.config.quantizer != "fsq":
            raise ValueError("quantize=True needs a tokenizer with quantizer='fsq'.")
        self.quantize = quantize
        self.quantizer = FSQ(self.config.fsq_levels) if quantize else None  # no weights: rebuilt from the config

    @property
    def out_channels(self) -> int:
        """d, the feature channels."""
        return self.config.latent_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        latents = self.encoder(x)
        return self.quantizer(latents) if self.quantizer is not None else latents

    def arguments(self) -> dict:
        """Constructor arguments, as written to ``encoder.json``."""
        return {"config": self.config.to_dict(), "quantize": self.quantize}

    @classmethod
    def from_tokenizer(cls, tokenizer: SliceTokenizer, quantize: bool = False) -> SliceEncoder:
        """The encoder half of a trained tokenizer (weights copied)."""
        encoder = cls(tokenizer.config, quantize=quantize)
        encoder.encoder.load_state_dict(tokenizer.encoder.state_dict())
        return encoder

    @classmethod
    def cut(cls, network: SliceTokenizer | SliceNavigator) -> SliceEncoder:
        return cls.from_tokenizer(network.tokenizer if isinstance(network, SliceNavigator) else network)


@register_architecture
class ContextEncoder(_Exported):
    """Tokenizer encoder + stage-2 dynamics trunk: features of slices seen in the context of a short trajectory.

    ``forward(x, actions=None)``: ``x`` is a slice (B, C, h, w) or a slice stack (B, T, C, h, w) with the actions
    between its slices (B, T - 1, 7). A zero action ("stay") is appended for the last step, which has no successor.
    Returns the continuous tokenizer latents concatenated with the trunk features (nearest-upsampled from the
    transformer's patch grid): (B, [T,] d + width, h / f, w / f). Each step's features depend on that step and the
    earlier ones only (the trunk is block-causal).

    A dynamics model trained with ``action_mode="shuffled"`` is rebuilt as ``"aligned"`` (given the true actions):
    the shuffling is a training ablation, not a property of the encoder.

    Args:
        tokenizer: the tokenizer's config (or its fields).
        dynamics: the dynamics config (or its fields).
    """

    architecture = "slicenav_context_encoder"
    export_name = "context_encoder"
    cut_from = (SliceNavigator,)

    def __init__(self, tokenizer: TokenizerConfig | Mapping, dynamics: DynamicsConfig | Mapping) -> None:
        super().__init__()
        self.tokenizer_config = _tokenizer_config(tokenizer)
        fields = dynamics.to_dict() if isinstance(dynamics, DynamicsConfig) else dict(dynamics)
        if fields.get("action_mode") == "shuffled":
            fields["action_mode"] = "aligned"
        self.encoder = SliceEncoderNet(self.tokenizer_config)
        self.quantizer = FSQ(self.tokenizer_config.fsq_levels) if self.tokenizer_config.quantizer == "fsq" else None
        self.dynamics = LatentDynamics(DynamicsConfig(**fields))

    @property
    def out_channels(self) -> int:
        return self.tokenizer_config.latent_channels + self.dynamics.config.width

    def forward(self, x: torch.Tensor, actions: torch.Tensor | None = None) -> torch.Tensor:
        single = x.ndim == 4
        stacks = x[:, None] if single else x
        if stacks.ndim != 5:
            raise ValueError(f"Expected slices (B, C, h, w) or stacks (B, T, C, h, w), got shape {tuple(x.shape)}.")
        b, t = stacks.shape[:2]
        if actions is None:
            actions = stacks.new_zeros(b, t - 1, 7)
        if tuple(actions.shape) != (b, t - 1, 7) or t > self.dynamics.config.max_steps:
            raise ValueError(
                f"Expected at most {self.dynamics.config.max_steps} slices and actions (B, T - 1, 7) = "
                f"{(b, t - 1, 7)}, got {tuple(actions.shape)}."
            )
        flat = self.encoder(stacks.flatten(0, 1))
        latents = flat.reshape(b, t, *flat.shape[1:])
        features = torch.cat([latents, self.context_features(latents, actions)], dim=2)
        return features[:, 0] if single else features

    def slice_pyramid(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The tokenizer encoder's stages of single slices (B, C, h, w) and their continuous latents (B, d, h', w'),
        before the trunk: what :meth:`context_features` takes, once the slices are stacked into trajectories."""
        stages = self.encoder.pyramid(x)
        return stages, self.encoder.to_latent(stages[-1])

    @property
    def max_context(self) -> int:
        """The longest trajectory the trunk takes at once (its ``max_steps``)."""
        return self.dynamics.config.max_steps

    def context_features(self, latents: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Trunk features of a trajectory of continuous latents (B, T, d, h, w) with the actions between its
        slices (B, T - 1, 7), nearest-upsampled to the latent grid: (B, T, width, h, w). Step t sees steps ``<= t``
        (block-causal); a "stay" action follows the last step. Grids whose sides the patch does not divide are
        padded (replicated) and cropped back."""
        b, steps = latents.shape[:2]
        flat = latents.flatten(0, 1)
        tokens = self.quantizer(flat) if self.quantizer is not None else flat
        patch = self.dynamics.config.patch
        h, w = tokens.shape[-2:]
        padded = nn.functional.pad(tokens, (0, -w % patch, 0, -h % patch), mode="replicate")
        padded = padded.reshape(b, steps, *padded.shape[1:])
        moves = torch.cat([actions, actions.new_zeros(b, 1, 7)], dim=1)  # "stay" after the last slice
        trunk = self.dynamics.features(padded, self.dynamics.condition(moves), steps)
        grid = self.dynamics.feature_grid(trunk, padded.shape[-2:])
        grid = grid.repeat_interleave(patch, dim=-2).repeat_interleave(patch, dim=-1)
        return grid[..., :h, :w]

    @property
    def pyramid_channels(self) -> tuple[int, ...]:
        """Channels of :meth:`pyramid`'s outputs: the tokenizer's stages, the last one widened by the trunk."""
        return (*self.tokenizer_config.channels[:-1], self.tokenizer_config.channels[-1] + self.dynamics.config.width)

    def pyramid(self, x: torch.Tensor, actions: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Multi-scale features: the tokenizer encoder's stages, the coarsest one concatenated with the dynamics
        trunk's features. Single slices (B, C, h, w) are one-step trajectories (no context): (B, c_k, h_k, w_k)
        per level. Slice stacks (B, T, C, h, w) with the actions between their slices (B, T - 1, 7) are encoded as
        trajectories, each slice in the context of the ones before it: (B, T, c_k, h_k, w_k) per level."""
        if x.ndim == 4:
            stages, latents = self.slice_pyramid(x)
            grid = self.context_features(latents[:, None], x.new_zeros(len(x), 0, 7))[:, 0]
            return [*stages[:-1], torch.cat([stages[-1], grid], dim=1)]
        if x.ndim != 5 or actions is None or tuple(actions.shape) != (x.shape[0], x.shape[1] - 1, 7):
            raise ValueError(
                f"Expected slices (B, C, h, w), or stacks (B, T, C, h, w) with actions (B, T - 1, 7); got "
                f"{tuple(x.shape)} and {None if actions is None else tuple(actions.shape)}."
            )
        b, t = x.shape[:2]
        flat_stages, flat_latents = self.slice_pyramid(x.flatten(0, 1))
        stages = [s.reshape(b, t, *s.shape[1:]) for s in flat_stages]
        latents = flat_latents.reshape(b, t, *flat_latents.shape[1:])
        return [*stages[:-1], torch.cat([stages[-1], self.context_features(latents, actions)], dim=2)]

    def arguments(self) -> dict:
        return {"tokenizer": self.tokenizer_config.to_dict(), "dynamics": self.dynamics.config.to_dict()}

    @classmethod
    def from_navigator(cls, navigator: SliceNavigator) -> ContextEncoder:
        """The context encoder of a trained :class:`~monai_slicenav.networks.SliceNavigator` (weights copied)."""
        encoder = cls(navigator.tokenizer.config, navigator.dynamics.config)
        encoder.encoder.load_state_dict(navigator.tokenizer.encoder.state_dict())
        encoder.dynamics.load_state_dict(navigator.dynamics.state_dict())
        return encoder

    @classmethod
    def cut(cls, network: SliceNavigator) -> ContextEncoder:
        return cls.from_navigator(network)


@register_architecture
class VolumeEncoder(_Exported):
    """The static-volume baseline's encoder: (B, C, D, H, W) -> (B, latent, D / f, H / f, W / f).

    A slice (B, C, h, w) is encoded as a one-voxel-thick volume and returns (B, latent, h / f, w / f), so slice-level
    probes can compare it with the 2D encoders.

    Args:
        config: the :class:`~monai_slicenav.networks.VolumeMAEConfig` (or its fields).
    """

    architecture = "slicenav_volume_encoder"
    spatial_dims = 3
    cut_from = (VolumeMAE, VoxelContrastiveNet)

    def __init__(self, config: VolumeMAEConfig | Mapping) -> None:
        super().__init__()
        self.config = config if isinstance(config, VolumeMAEConfig) else VolumeMAEConfig(**config)
        cfg = self.config
        self.encoder = ConvEncoderNet(3, cfg.in_channels, cfg.channels, cfg.num_res_units, cfg.latent_dim, cfg.norm)

    @property
    def out_channels(self) -> int:
        return self.config.latent_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            return self.encoder(x[:, :, None])[:, :, 0]
        return self.encoder(x)

    def arguments(self) -> dict:
        return {"config": self.config.to_dict()}

    @classmethod
    def from_mae(cls, mae: VolumeMAE | VoxelContrastiveNet) -> VolumeEncoder:
        """The encoder of a trained :class:`~monai_slicenav.networks.VolumeMAE` (its encoder half) or
        :class:`~monai_slicenav.networks.VoxelContrastiveNet` (weights copied)."""
        encoder = cls(mae.config)
        encoder.encoder.load_state_dict(mae.encoder.state_dict())
        return encoder

    @classmethod
    def cut(cls, network: VolumeMAE | VoxelContrastiveNet) -> VolumeEncoder:
        return cls.from_mae(network)


def encoders_of(network: nn.Module) -> dict[str, nn.Module]:
    """The exportable encoders of a trained pretraining network, by export name (``encoder`` for every variant,
    ``context_encoder`` for the dynamics stage): every registered architecture whose ``cut_from`` names the
    network's class.

    Raises:
        TypeError: for a network that is not one of the pretraining networks.
    """
    found = {
        cls.export_name: cls.cut(network)
        for cls in ENCODER_ARCHITECTURES.values()
        if isinstance(network, getattr(cls, "cut_from", ()))
    }
    if not found:
        raise TypeError(f"No exportable encoder known for {type(network).__name__}.")
    return found
