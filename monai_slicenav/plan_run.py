"""``slicenav plan``: one planning episode on a volume, from its canonical axial start to a goal given as a pose (a
trajectory JSON: its last pose) or as a slice image, written as the executed trajectory, a strip of the slices seen
and a summary (costs, model calls, time, and the final pose error when the goal pose is known)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from .data.phantom import shepp_logan_volume
from .encoders import trained_navigator
from .geometry import Pose
from .io import atomic_write_bytes, atomic_write_json, load_volume, png_bytes, read_json_object
from .planning import (
    LANDMARK_PLANES,
    LANDMARKS,
    SEARCH,
    NavigatorModel,
    RendererModel,
    named_plane,
    plan,
    plane_names,
    pose_error,
    read_landmarks,
    render_goal,
)
from .transforms import RandSliceTrajectory, trajectory_from_dict, trajectory_to_dict
from .visualize import action_caption, slice_grid
from .volume import scale_intensity

__all__ = ["RENDERER", "read_goal", "plan_episode"]

RENDERER = "renderer"  # --model value: plan with the true renderer (the upper bound)


def read_goal(
    goal: str | os.PathLike, volume: torch.Tensor, size: int, landmarks: str | os.PathLike | None = None
) -> tuple[torch.Tensor, Pose | None]:
    """The goal slice (1, size, size) and, for a named plane or a trajectory JSON, its pose: a name of
    :data:`~monai_slicenav.planning.STANDARD_PLANES` is that plane of ``volume``, one of
    :data:`~monai_slicenav.planning.LANDMARK_PLANES` that plane of the head whose ``landmarks`` file is given
    (:func:`~monai_slicenav.planning.read_landmarks`); a trajectory's goal is its last pose, rendered on ``volume``;
    a PNG is the goal slice itself (grey levels / 255).

    Raises:
        FileNotFoundError: when ``goal`` is neither a named plane nor an existing file.
        ValueError: for a malformed trajectory or landmarks, a landmark plane without landmarks, another file type,
            or an image of another size than ``size``.
    """
    if str(goal) in LANDMARK_PLANES and landmarks is None:
        raise ValueError(f"--goal {goal} needs --landmarks FILE (a JSON of {', '.join(LANDMARKS)} in world mm).")
    if str(goal) in plane_names(True):
        pose = named_plane(volume, str(goal), size, None if landmarks is None else read_landmarks(landmarks))
        return render_goal(volume, pose, size), pose
    path = Path(goal)
    if not path.is_file():
        named = ", ".join(plane_names(True))
        raise FileNotFoundError(f"{path}: no goal file there (nor a named plane: {named}).")
    if path.suffix == ".json":
        try:
            poses, _ = trajectory_from_dict(read_json_object(path))
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from err
        pose = poses[-1].to(dtype=torch.float64)
        return render_goal(volume, pose, size), pose
    if path.suffix.lower() != ".png":
        raise ValueError(f"{path}: a goal is a trajectory .json (its last pose) or a .png slice.")
    from PIL import Image

    pixels = torch.from_numpy(np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0)
    if tuple(pixels.shape) != (size, size):
        raise ValueError(f"{path}: the goal slice is {tuple(pixels.shape)}, the slices are {size} x {size}.")
    return pixels[None], None


def plan_episode(
    image: str | None,
    model: str,
    goal: str,
    out: str | os.PathLike,
    size: int = 64,
    steps: int = 10,
    seed: int = 0,
    landmarks: str | os.PathLike | None = None,
) -> dict:
    """Plan from the volume's canonical axial start towards ``goal`` (see :func:`read_goal`) with ``model`` (a
    trained dynamics stage, or :data:`RENDERER`) and write ``trajectory.json``, ``plan.png`` and ``plan.json`` into
    ``out``; returns the summary written to ``plan.json``."""
    volume = scale_intensity(load_volume(image, channels=1) if image else shepp_logan_volume(160))
    target, goal_pose = read_goal(goal, volume, size, landmarks)
    sampler = RandSliceTrajectory(1, size)
    start = sampler.centred_pose(sampler.frame(volume), "axial", dtype=torch.float64)
    world = RendererModel(volume, size) if model == RENDERER else NavigatorModel(trained_navigator(model))
    began = time.perf_counter()
    search = SEARCH["renderer" if model == RENDERER else "model"]
    result = plan(volume, start, target, world, steps=steps, seed=seed, **search)
    seconds = time.perf_counter() - began
    out = Path(out)
    captions = [action_caption(0, None)] + [action_caption(t + 1, a) for t, a in enumerate(result.actions)]
    strip = torch.cat([result.slices, target[None]])
    picture = slice_grid(strip, [*captions, ["goal"]], columns=8, value_range=(0.0, 1.0))
    atomic_write_bytes(out / "plan.png", png_bytes(picture))
    record = trajectory_to_dict(result.poses.to(dtype=torch.float32), result.actions, size,
                                image=str(image) if image else "builtin:shepp_logan", planned_to=str(goal))  # fmt: skip
    atomic_write_json(out / "trajectory.json", record)
    summary = {"model": model, "goal": str(goal), "steps": len(result.actions), "costs": result.costs,
               "model_calls": result.model_calls, "seconds": round(seconds, 3)}  # fmt: skip
    if goal_pose is not None:
        distance, angle = pose_error(result.poses[-1], goal_pose)
        summary.update(start_error_mm=round(pose_error(start, goal_pose)[0], 3), final_error_mm=round(distance, 3),
                       final_error_deg=round(angle, 3))  # fmt: skip
    atomic_write_json(out / "plan.json", summary)
    return summary
