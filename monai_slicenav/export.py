"""The public path of the encoder export API (``monai_slicenav.export.load_encoder`` and friends), kept for users
and bundles; the code lives in :mod:`monai_slicenav.encoders`."""

from .encoders import (
    ENCODER_ARCHITECTURES,
    EXPORT_FORMAT,
    MAX_ENCODER_PARAMETERS,
    ContextEncoder,
    SliceEncoder,
    VolumeEncoder,
    encoders_of,
    export_encoder,
    export_from_bundle,
    input_contract,
    load_encoder,
    load_into,
    load_state_dict,
    preprocessing,
    strip_prefixes,
)

__all__ = [
    "ENCODER_ARCHITECTURES",
    "EXPORT_FORMAT",
    "MAX_ENCODER_PARAMETERS",
    "ContextEncoder",
    "SliceEncoder",
    "VolumeEncoder",
    "encoders_of",
    "export_encoder",
    "export_from_bundle",
    "input_contract",
    "load_encoder",
    "load_into",
    "load_state_dict",
    "preprocessing",
    "strip_prefixes",
]
