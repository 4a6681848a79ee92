"""What bundles call: batch preparation and handlers for the ignite workflows."""

from .tokenizer import (
    ExportEncoderHandler,
    PrepareSlices,
    ReconstructionStripHandler,
    ReseedHandler,
    TokenWriter,
    latest_checkpoint,
    reconstruction_strip,
    unwrap_network,
)

__all__ = [
    "ExportEncoderHandler",
    "PrepareSlices",
    "ReconstructionStripHandler",
    "ReseedHandler",
    "TokenWriter",
    "latest_checkpoint",
    "reconstruction_strip",
    "unwrap_network",
]
