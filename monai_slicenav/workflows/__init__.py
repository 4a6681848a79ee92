"""What bundles call: batch preparation, handlers and trained-stage loading for the ignite workflows.

Modules: :mod:`.batches` (``prepare_batch`` callables), :mod:`.handlers` (shared by every stage),
:mod:`.tokenizer_handlers`, :mod:`.dynamics_handlers`, :mod:`.static_handlers`, :mod:`.contrastive_handlers` (the
handlers and writers each bundle adds), :mod:`.controllability` (the stage-2 figures and their ignite metric),
:mod:`.stages` (the frozen tokenizer, training records), :mod:`.run_config` (the run's hyper-parameters, read from
its parsed config), :mod:`.non_finite`, :mod:`.distributed`; trained networks are rebuilt by
:mod:`monai_slicenav.encoders.trained` and re-exported here for the bundle configs.
"""

from ..encoders.trained import recorded_navigation, stage_models, trained_navigator, trained_network
from .batches import (
    PrepareAppearances,
    PrepareMaskedVolumes,
    PrepareSliceAppearances,
    PrepareSlices,
    PrepareTrajectories,
    RenderOnDevice,
)
from .contrastive_handlers import VoxelFeatureWriter, feature_colours
from .controllability import ControllabilityMeter, ControllabilityMetric, controllability, held_out_controllability
from .distributed import is_main_process, silence_other_ranks
from .dynamics_handlers import NavigationStripHandler, RolloutWriter, navigation_strip
from .handlers import (
    ExportEncoderHandler,
    HandlerGroup,
    ItemWriter,
    PruneCheckpointsHandler,
    ReseedHandler,
    StripHandler,
    TrainingRecordHandler,
    latest_checkpoint,
    unwrap_network,
)
from .non_finite import NonFiniteLossError, StopOnNonFiniteLoss
from .run_config import bundle_hyperparameters
from .stages import load_tokenizer_weights, training_record
from .static_handlers import VolumeReconstructionWriter, masked_strip
from .tokenizer_handlers import ReconstructionStripHandler, TokenWriter, appearance_contrast, reconstruction_strip

__all__ = [
    "bundle_hyperparameters",
    "HandlerGroup",
    "VoxelFeatureWriter",
    "feature_colours",
    "PrepareMaskedVolumes",
    "PrepareAppearances",
    "PrepareSlices",
    "PrepareTrajectories",
    "RenderOnDevice",
    "PrepareSliceAppearances",
    "ControllabilityMeter",
    "controllability",
    "held_out_controllability",
    "is_main_process",
    "silence_other_ranks",
    "ControllabilityMetric",
    "NavigationStripHandler",
    "RolloutWriter",
    "navigation_strip",
    "ExportEncoderHandler",
    "TrainingRecordHandler",
    "PruneCheckpointsHandler",
    "training_record",
    "ItemWriter",
    "ReseedHandler",
    "StripHandler",
    "latest_checkpoint",
    "unwrap_network",
    "NonFiniteLossError",
    "StopOnNonFiniteLoss",
    "load_tokenizer_weights",
    "appearance_contrast",
    "recorded_navigation",
    "stage_models",
    "trained_navigator",
    "trained_network",
    "VolumeReconstructionWriter",
    "masked_strip",
    "ReconstructionStripHandler",
    "TokenWriter",
    "reconstruction_strip",
]
