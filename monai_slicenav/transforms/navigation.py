"""The trajectory file format (poses + actions as JSON, :func:`trajectory_to_dict` / :class:`LoadTrajectoryd`) and
one slice-navigation run on one volume (:func:`navigate`: sample a trajectory, render it)."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from monai.transforms import Transform

from ..geometry import Pose, as_slice_size, relative
from ..io import read_json_object
from ..volume import as_volume
from .render import RenderSlices
from .trajectory import RandSliceTrajectory

__all__ = [
    "ACTION_FIELDS",
    "Trajectory",
    "navigate",
    "replay",
    "trajectory_to_dict",
    "trajectory_from_dict",
    "LoadTrajectoryd",
]

_TOLERANCE = 1e-3  # mm, radians, log-spacing and rotation-matrix entries: float32 records round far below this
ACTION_FIELDS = ("dc_col_mm", "dc_row_mm", "dc_normal_mm", "dr_col_rad", "dr_row_rad", "dr_normal_rad", "dlog_spacing")


@dataclass(frozen=True)
class Trajectory:
    """Poses (T + 1,), actions (T, 7) and the rendered slices (T + 1, C, h, w) of one navigation run."""

    poses: Pose
    actions: torch.Tensor
    slices: torch.Tensor


def navigate(
    img: torch.Tensor,
    num_steps: int,
    spatial_size: Sequence[int] | int,
    mode: str = "mixed",
    seed: int = 0,
    spacing: float | None = None,
    threshold: float = 0.0,
    start_orientation: str = "canonical",
) -> Trajectory:
    """Sample a seeded trajectory on ``img`` (C, X, Y, Z) and render its slices (bilinear, zero padding)."""
    sampler = RandSliceTrajectory(
        num_steps, spatial_size, mode=mode, start_orientation=start_orientation, spacing=spacing, threshold=threshold
    )
    sampler.set_random_state(seed)
    poses, actions = sampler(img)
    return Trajectory(poses, actions, RenderSlices(spatial_size)(img, poses))


def replay(img: torch.Tensor, record: dict, name: str = "trajectory") -> tuple[Trajectory, tuple[int, int]]:
    """Render a recorded trajectory (:func:`trajectory_to_dict`'s format, e.g. saved by ``slicenav navigate``) on
    ``img`` again, pose for pose, at its recorded slice size (bilinear, zero padding, as :func:`navigate`).

    Raises:
        ValueError: naming ``name``, for a record that is not a valid trajectory.
    """
    try:
        poses, actions = trajectory_from_dict(record)
        size = as_slice_size(record["spatial_size"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{name}: {err}") from err
    return Trajectory(poses, actions, RenderSlices(size)(img, poses)), size


def trajectory_to_dict(poses: Pose, actions: torch.Tensor, spatial_size: Sequence[int] | int, **info: object) -> dict:
    """A JSON-ready record: slice size, poses (centre mm, rotation columns u/v/n, spacing mm), actions, ``info``."""
    return {
        **info,
        "spatial_size": list(as_slice_size(spatial_size)),
        "action_fields": list(ACTION_FIELDS),
        "poses": [
            {"center_mm": c.tolist(), "rotation": r.tolist(), "spacing_mm": float(s)}
            for c, r, s in zip(poses.center, poses.rotation, poses.spacing, strict=True)
        ],
        "actions": actions.tolist(),
    }


def trajectory_from_dict(record: dict) -> tuple[Pose, torch.Tensor]:
    """Poses and actions from a record written by :func:`trajectory_to_dict`.

    Raises:
        ValueError: when fields are missing or the counts disagree (T + 1 poses for T actions).
    """
    try:
        # read in double precision for the checks (large world coordinates), returned as float32
        center = torch.tensor([p["center_mm"] for p in record["poses"]], dtype=torch.float64)
        rotation = torch.tensor([p["rotation"] for p in record["poses"]], dtype=torch.float64)
        spacing = torch.tensor([p["spacing_mm"] for p in record["poses"]], dtype=torch.float64)
        actions = torch.tensor(record["actions"], dtype=torch.float64).reshape(-1, len(ACTION_FIELDS))
    except (KeyError, TypeError, RuntimeError) as err:
        raise ValueError(f"Not a trajectory record: {type(err).__name__}: {err}") from err
    if len(actions) + 1 != len(center):
        raise ValueError(
            f"A trajectory has one pose more than actions, got {len(center)} poses, {len(actions)} actions."
        )
    _check_trajectory(Pose(center, rotation, spacing), actions)
    return Pose(center.float(), rotation.float(), spacing.float()), actions.float()


def _check_trajectory(poses: Pose, actions: torch.Tensor) -> None:
    """Refuse what would render garbage: non-finite numbers, a rotation that is not one (orthonormal, det +1), a
    spacing <= 0, or an action that does not lead from its pose to the next (to :data:`_TOLERANCE`)."""
    if not all(bool(torch.isfinite(t).all()) for t in (poses.center, poses.rotation, poses.spacing, actions)):
        raise ValueError("the trajectory holds NaN or Inf values.")
    rotation = poses.rotation
    gram_error = (rotation.transpose(-1, -2) @ rotation - torch.eye(3, dtype=torch.float64)).abs().amax(dim=(-2, -1))
    bad = torch.nonzero((gram_error > _TOLERANCE) | (torch.linalg.det(rotation) < 0)).flatten()
    if len(bad):
        raise ValueError(f"pose {int(bad[0])}: 'rotation' is not a rotation matrix (orthonormal, determinant +1).")
    if bool((poses.spacing <= 0).any()):
        raise ValueError(f"pose {int(torch.nonzero(poses.spacing <= 0)[0])}: 'spacing_mm' must be > 0.")
    steps = relative(poses[:-1], poses[1:])
    error = (steps - actions).abs().amax(dim=-1)
    if len(error) and float(error.max()) > _TOLERANCE:
        k = int(error.argmax())
        raise ValueError(
            f"action {k} does not lead from pose {k} to pose {k + 1} (off by {float(error[k]):.3g} in "
            f"{ACTION_FIELDS[int((steps[k] - actions[k]).abs().argmax())]}): poses and actions disagree."
        )


class LoadTrajectoryd(Transform):
    """Set a fixed trajectory, read from a JSON record (``trajectory.json`` as ``slicenav render`` and the bundles
    write it), in place of a sampled one: packed poses (T + 1, 13) under ``pose_key``, actions (T, 7) under
    ``action_key``. The poses are in the world (mm) space of the volume they were sampled on.

    Raises:
        FileNotFoundError: when the file is missing.
        ValueError: when it is not a trajectory record (the file is named).
    """

    def __init__(
        self, path: str | os.PathLike, pose_key: str = "poses", action_key: str = "actions", image_key: str = "image"
    ) -> None:
        try:
            record = read_json_object(path)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{path}: no such trajectory file.") from err
        try:
            self.poses, self.actions = trajectory_from_dict(record)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from err
        self.path, self.pose_key, self.action_key, self.image_key = Path(path), pose_key, action_key, image_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        if self.image_key in data:
            self._check_inside(data[self.image_key])
        return {**data, self.pose_key: self.poses.as_tensor(), self.action_key: self.actions.clone()}

    def _check_inside(self, image: torch.Tensor) -> None:
        """Refuse slice centres far outside the volume (more than half its extent beyond any face): poses of
        another scan's world space, which would render blank slices."""
        volume, affine = as_volume(image, self.image_key, check_values=False)
        centres = torch.cat([self.poses.center.double(), torch.ones(len(self.poses.center), 1, dtype=torch.float64)], 1)
        voxels = (torch.linalg.inv(affine) @ centres.T).T[:, :3]
        shape = torch.tensor(volume.shape[1:], dtype=torch.float64)
        outside = ((voxels < -shape / 2) | (voxels > 1.5 * shape)).any(dim=1)
        if bool(outside.any()):
            k = int(torch.nonzero(outside)[0])
            raise ValueError(
                f"{self.path}: pose {k}'s centre {[round(float(v), 1) for v in self.poses.center[k]]} mm lies far "
                f"outside the volume (voxel {[round(float(v), 1) for v in voxels[k]]} of {tuple(volume.shape[1:])}): "
                "a trajectory of another scan?"
            )
