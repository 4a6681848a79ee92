"""MONAI transforms for slice navigation: array transforms and their dictionary (``...d``) wrappers."""

from .device_render import CropToSlices, CropToSlicesd, collate_volume_crops, slice_renderer
from .embedded import (
    CheckScan,
    CheckScand,
    EmbeddedVolumed,
    LoadVolumed,
    otsu_threshold,
    tissue_labels,
    volume_loader,
)
from .labels import CoarseLabelsd, DeformedCopyd
from .navigation import (
    ACTION_FIELDS,
    LoadTrajectoryd,
    Trajectory,
    navigate,
    replay,
    trajectory_from_dict,
    trajectory_to_dict,
)
from .pretext import SlicePoseVectors, SlicePoseVectorsD, SlicePoseVectorsd, SlicePoseVectorsDict
from .regime import NAVIGATION_REGIME, NavigationRegime
from .render import RenderSlices, RenderSlicesD, RenderSlicesd, RenderSlicesDict, render_slices, world_to_grid
from .synth import (
    RandSynthAppearance,
    RandSynthAppearanced,
    RandSynthLabelEnsembled,
    SynthLabelEnsemble,
    SynthLabelEnsembled,
)
from .trajectory import (
    START_ORIENTATIONS,
    TRAJECTORY_MODES,
    RandSliceTrajectory,
    RandSliceTrajectoryD,
    RandSliceTrajectoryd,
    RandSliceTrajectoryDict,
)

__all__ = [
    "NAVIGATION_REGIME",
    "NavigationRegime",
    "CoarseLabelsd",
    "DeformedCopyd",
    "ACTION_FIELDS",
    "LoadTrajectoryd",
    "Trajectory",
    "navigate",
    "replay",
    "trajectory_from_dict",
    "trajectory_to_dict",
    "CheckScan",
    "CheckScand",
    "EmbeddedVolumed",
    "LoadVolumed",
    "volume_loader",
    "tissue_labels",
    "otsu_threshold",
    "SlicePoseVectors",
    "SlicePoseVectorsd",
    "SlicePoseVectorsD",
    "SlicePoseVectorsDict",
    "RenderSlices",
    "RenderSlicesd",
    "RenderSlicesD",
    "RenderSlicesDict",
    "render_slices",
    "CropToSlices",
    "CropToSlicesd",
    "collate_volume_crops",
    "slice_renderer",
    "world_to_grid",
    "RandSynthAppearance",
    "RandSynthAppearanced",
    "RandSynthLabelEnsembled",
    "SynthLabelEnsemble",
    "SynthLabelEnsembled",
    "START_ORIENTATIONS",
    "TRAJECTORY_MODES",
    "RandSliceTrajectory",
    "RandSliceTrajectoryd",
    "RandSliceTrajectoryD",
    "RandSliceTrajectoryDict",
]
