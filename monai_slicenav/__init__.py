"""monai_slicenav: self-supervised pretraining for 3D MRI by controllable 2D slice navigation."""

from .geometry import Pose, apply_action, compose_actions, invert_action, relative, slice_points
from .transforms import RandSliceTrajectory, RandSliceTrajectoryd, RenderSlices, RenderSlicesd, render_slices
from .volume import as_volume, foreground_box, voxel_slice_pose

__version__ = "0.1.0"

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
    "as_volume",
    "foreground_box",
    "voxel_slice_pose",
]
