"""Networks: the slice tokenizer (stage 1), its quantizer, and the latent dynamics model (stage 2)."""

from .dynamics import DynamicsConfig, LatentDynamics, block_causal_mask, next_step_loss
from .quantizer import FSQ
from .tokenizer import SliceDecoderNet, SliceEncoderNet, SliceTokenizer, TokenizerConfig, TokenizerLoss

__all__ = [
    "DynamicsConfig",
    "LatentDynamics",
    "block_causal_mask",
    "next_step_loss",
    "FSQ",
    "SliceDecoderNet",
    "SliceEncoderNet",
    "SliceTokenizer",
    "TokenizerConfig",
    "TokenizerLoss",
]
