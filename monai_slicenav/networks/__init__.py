"""Networks: the slice tokenizer (stage 1) and its quantizer."""

from .quantizer import FSQ
from .tokenizer import SliceDecoderNet, SliceEncoderNet, SliceTokenizer, TokenizerConfig, TokenizerLoss

__all__ = ["FSQ", "SliceDecoderNet", "SliceEncoderNet", "SliceTokenizer", "TokenizerConfig", "TokenizerLoss"]
