"""What consumes an exported encoder: lifting a frozen 2D encoder to 3D (:mod:`.lift3d`, the ``slicenav-lift3d``
FlexibleUNet backbone, registered on import), the registration network and losses (:mod:`.registration`) and the
registration runner on packaged or user pairs (:mod:`.registration_run`)."""

from .lift3d import DEFAULT_BACKBONE, Lift3D, SliceNavBackbone, register_backbone
from .registration import RegistrationConfig
from .registration_run import compare_similarities, default_pairs, file_pair, load_pair, run_registration

__all__ = [
    "DEFAULT_BACKBONE",
    "Lift3D",
    "SliceNavBackbone",
    "register_backbone",
    "RegistrationConfig",
    "compare_similarities",
    "default_pairs",
    "file_pair",
    "load_pair",
    "run_registration",
]
