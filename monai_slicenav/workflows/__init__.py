"""What bundles call: batch preparation and handlers for the ignite workflows."""

from .distributed import is_main_process, silence_other_ranks
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
    "is_main_process",
    "silence_other_ranks",
    "ExportEncoderHandler",
    "PrepareSlices",
    "ReconstructionStripHandler",
    "ReseedHandler",
    "TokenWriter",
    "latest_checkpoint",
    "reconstruction_strip",
    "unwrap_network",
]
