"""Single-channel encoders on multi-contrast inputs (e.g. BraTS's T1, T1ce, T2, FLAIR): the first convolution's
weights spread over C input channels, as ImageNet models are adapted to other channel counts."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

__all__ = ["CHANNEL_MODES", "expand_input_channels", "input_channels"]

CHANNEL_MODES = ("mean", "repeat")


def input_channels(encoder: nn.Module) -> int:
    """The image channels an exported encoder reads (its tokenizer's or volume config's ``in_channels``)."""
    config = getattr(encoder, "config", None) or encoder.tokenizer_config
    return int(config.in_channels)


def _with_channels(arguments: Mapping, channels: int) -> dict:
    """``arguments()`` of an encoder with every config's ``in_channels`` set to ``channels``."""
    return {
        key: {**value, "in_channels": channels} if isinstance(value, Mapping) and "in_channels" in value else value
        for key, value in arguments.items()
    }


def expand_input_channels(encoder: nn.Module, channels: int, mode: str = "mean") -> nn.Module:
    """A copy of a single-channel ``encoder`` that reads ``channels`` input channels: the same architecture with
    ``in_channels=channels`` (so it exports and loads as such), every weight copied, and the first convolution's
    weights spread over the channels: ``"mean"`` divides them by ``channels`` (C copies of one image give exactly the
    single-channel features), ``"repeat"`` copies them (each channel weighs as the one image did).

    Raises:
        ValueError: for an encoder that does not read one channel, ``channels`` < 1, or an unknown mode.
    """
    if mode not in CHANNEL_MODES:
        raise ValueError(f"mode must be one of {CHANNEL_MODES}, got {mode!r}.")
    if int(channels) < 1 or input_channels(encoder) != 1:
        raise ValueError(
            f"Expanding needs a single-channel encoder and channels >= 1; got an encoder reading "
            f"{input_channels(encoder)} channel(s) and channels={channels}."
        )
    wider = type(encoder)(**_with_channels(encoder.arguments(), int(channels)))
    state = encoder.state_dict()
    expanded = {}
    for key, value in wider.state_dict().items():
        old = state[key]
        if old.shape == value.shape:
            expanded[key] = old
        else:  # the first convolution: (out, 1, k...) -> (out, C, k...)
            spread = old.expand(old.shape[0], int(channels), *old.shape[2:])
            expanded[key] = spread / channels if mode == "mean" else spread.clone()
    wider.load_state_dict(expanded)
    if hasattr(encoder, "input_spec"):  # the preprocessing contract of a loaded export holds per channel
        wider.input_spec = dict(encoder.input_spec)
    return wider.train(encoder.training)
