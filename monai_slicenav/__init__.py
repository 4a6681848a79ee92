"""monai_slicenav: self-supervised pretraining for 3D MRI by controllable 2D slice navigation."""

from .data import embedded_datalist, file_datalist
from .downstream import Lift3D, SliceNavBackbone, register_backbone
from .encoders import SliceEncoder, export_encoder
from .geometry import Pose, apply_action, compose_actions, invert_action, relative, slice_points
from .networks import LatentDynamics, SliceTokenizer
from .transforms import (
    EmbeddedVolumed,
    LoadVolumed,
    RandSliceTrajectory,
    RandSliceTrajectoryd,
    RandSynthAppearanced,
    RenderSlices,
    RenderSlicesd,
    SynthLabelEnsembled,
    render_slices,
)
from .volume import as_volume, foreground_box, voxel_slice_pose

__version__ = "0.10.0"

__all__ = [
    "__version__",
    "Pose",
    "apply_action",
    "compose_actions",
    "invert_action",
    "relative",
    "slice_points",
    "RandSliceTrajectory",
    "RandSliceTrajectoryd",
    "RenderSlices",
    "RenderSlicesd",
    "render_slices",
    "EmbeddedVolumed",
    "LoadVolumed",
    "SynthLabelEnsembled",
    "RandSynthAppearanced",
    "embedded_datalist",
    "file_datalist",
    "SliceTokenizer",
    "LatentDynamics",
    "SliceEncoder",
    "export_encoder",
    "Lift3D",
    "SliceNavBackbone",
    "register_backbone",
    "as_volume",
    "foreground_box",
    "voxel_slice_pose",
]
