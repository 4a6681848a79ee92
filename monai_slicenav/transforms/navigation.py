"""The trajectory file format (poses + actions as JSON, :func:`trajectory_to_dict` / :class:`LoadTrajectoryd`) and
one slice-navigation run on one volume (:func:`navigate`: sample a trajectory, render it)."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import torch
from monai.transforms import Transform

from ..geometry import Pose, as_slice_size
from ..io import read_json_object
from .render import RenderSlices
from .trajectory import RandSliceTrajectory

__all__ = [
    "ACTION_FIELDS",
    "Trajectory",
    "navigate",
    "trajectory_to_dict",
    "trajectory_from_dict",
    "LoadTrajectoryd",
]

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
        center = torch.tensor([p["center_mm"] for p in record["poses"]], dtype=torch.float32)
        rotation = torch.tensor([p["rotation"] for p in record["poses"]], dtype=torch.float32)
        spacing = torch.tensor([p["spacing_mm"] for p in record["poses"]], dtype=torch.float32)
        actions = torch.tensor(record["actions"], dtype=torch.float32).reshape(-1, len(ACTION_FIELDS))
    except (KeyError, TypeError, RuntimeError) as err:
        raise ValueError(f"Not a trajectory record: {type(err).__name__}: {err}") from err
    if len(actions) + 1 != len(center):
        raise ValueError(
            f"A trajectory has one pose more than actions, got {len(center)} poses, {len(actions)} actions."
        )
    return Pose(center, rotation, spacing), actions


class LoadTrajectoryd(Transform):
    """Set a fixed trajectory, read from a JSON record (``trajectory.json`` as ``slicenav render`` and the bundles
    write it), in place of a sampled one: packed poses (T + 1, 13) under ``pose_key``, actions (T, 7) under
    ``action_key``. The poses are in the world (mm) space of the volume they were sampled on.

    Raises:
        FileNotFoundError: when the file is missing.
        ValueError: when it is not a trajectory record (the file is named).
    """

    def __init__(self, path: str | os.PathLike, pose_key: str = "poses", action_key: str = "actions") -> None:
        try:
            record = read_json_object(path)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{path}: no such trajectory file.") from err
        try:
            self.poses, self.actions = trajectory_from_dict(record)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from err
        self.pose_key, self.action_key = pose_key, action_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        return {**data, self.pose_key: self.poses.as_tensor(), self.action_key: self.actions.clone()}
