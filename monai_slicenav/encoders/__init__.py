"""The encoders pretraining exports, their file format (``encoder.pt`` + ``encoder.json``) and safe weight loading.

Layers: :mod:`.weights` (plain state dicts from untrusted files) -> :mod:`.record` (the export format and the
architecture registry) -> :mod:`.architectures` (the registered encoders) -> :mod:`.bundles` (export from a trained
bundle folder).
"""

from .architectures import ContextEncoder, SliceEncoder, VolumeEncoder, encoders_of
from .bundles import export_from_bundle
from .channels import CHANNEL_MODES, expand_input_channels, input_channels
from .contract import InputCheck, input_contract, preprocessing, training_contract
from .record import (
    ENCODER_ARCHITECTURES,
    EXPORT_FORMAT,
    MAX_ENCODER_PARAMETERS,
    copy_export,
    export_encoder,
    export_paths,
    load_encoder,
    read_record,
    register_architecture,
)
from .trained import recorded_navigation, stage_models, trained_navigator, trained_network
from .weights import load_into, load_state_dict, strip_prefixes

__all__ = [
    "ContextEncoder",
    "SliceEncoder",
    "VolumeEncoder",
    "encoders_of",
    "export_from_bundle",
    "CHANNEL_MODES",
    "InputCheck",
    "input_contract",
    "preprocessing",
    "training_contract",
    "expand_input_channels",
    "input_channels",
    "ENCODER_ARCHITECTURES",
    "EXPORT_FORMAT",
    "MAX_ENCODER_PARAMETERS",
    "copy_export",
    "export_encoder",
    "export_paths",
    "load_encoder",
    "read_record",
    "register_architecture",
    "recorded_navigation",
    "stage_models",
    "trained_navigator",
    "trained_network",
    "load_into",
    "load_state_dict",
    "strip_prefixes",
]
