"""What bundles call: batch preparation and handlers for the ignite workflows."""

from .distributed import is_main_process, silence_other_ranks
from .dynamics import (
    ControllabilityHandler,
    NavigationStripHandler,
    PrepareTrajectories,
    RolloutWriter,
    load_tokenizer_weights,
    navigation_strip,
    recorded_navigation,
    stage_models,
    trained_navigator,
)
from .non_finite import NonFiniteLossError, StopOnNonFiniteLoss
from .static import PrepareMaskedVolumes, VolumeReconstructionWriter, masked_strip
from .tokenizer import (
    ExportEncoderHandler,
    ItemWriter,
    PrepareSlices,
    ReconstructionStripHandler,
    ReseedHandler,
    StripHandler,
    TokenWriter,
    latest_checkpoint,
    reconstruction_strip,
    unwrap_network,
)

__all__ = [
    "NonFiniteLossError",
    "StopOnNonFiniteLoss",
    "PrepareMaskedVolumes",
    "VolumeReconstructionWriter",
    "masked_strip",
    "ControllabilityHandler",
    "NavigationStripHandler",
    "PrepareTrajectories",
    "RolloutWriter",
    "load_tokenizer_weights",
    "navigation_strip",
    "trained_navigator",
    "recorded_navigation",
    "stage_models",
    "is_main_process",
    "silence_other_ranks",
    "ExportEncoderHandler",
    "PrepareSlices",
    "ReconstructionStripHandler",
    "StripHandler",
    "ReseedHandler",
    "ItemWriter",
    "TokenWriter",
    "latest_checkpoint",
    "reconstruction_strip",
    "unwrap_network",
]
