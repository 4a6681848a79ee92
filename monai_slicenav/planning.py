"""Goal-directed navigation: bring the slice plane to a goal view by model-predictive control over a world model.

At every step the planner searches action sequences of ``horizon`` steps with the cross-entropy method (samples
drawn inside the trained regime's per-step bounds, the best ``elites`` refitted, a few rounds), scoring each by how
far the model's imagined final slice is from the goal in the model's latent space; it then executes the first action
on the real volume, renders the slice it reaches, and plans again from there, until the cost stops falling or the
step budget is spent. Two models share one interface (:class:`WorldModel`):

* :class:`NavigatorModel`: a trained stage-2 :class:`~monai_slicenav.networks.SliceNavigator`, imagining from the
  slices seen so far alone (what the world-model literature's planning success measures);
* :class:`RendererModel`: the true renderer (it imagines by rendering the volume): the upper bound;
* :class:`WarpModel`: the last slice warped by the in-plane part of each action (no learning): what a model that
  learned nothing of out-of-plane motion would plan.

Seeded and deterministic on the CPU.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from .geometry import Pose, apply_action, inplane_warp
from .io import read_json_object
from .networks.navigator import SliceNavigator, rollout
from .transforms.regime import NAVIGATION_REGIME, NavigationRegime
from .transforms.render import RenderSlices
from .transforms.trajectory import RandSliceTrajectory

__all__ = [
    "WorldModel",
    "RendererModel",
    "NavigatorModel",
    "WarpModel",
    "PlanResult",
    "SEARCH",
    "STANDARD_PLANES",
    "LANDMARK_PLANES",
    "LANDMARKS",
    "acpc_frame",
    "action_bounds",
    "landmark_plane",
    "named_plane",
    "plane_names",
    "read_landmarks",
    "plan",
    "pose_error",
    "render_goal",
    "standard_plane",
]


# The search each model gets (``plan`` keyword arguments): the renderer is cheap and exact, so it gets a wide search;
# a learned model's rollouts cost a trunk pass each, so it gets a narrow one (under 2 s per re-plan, `small` preset)
SEARCH = {
    "renderer": {"horizon": 3, "samples": 256, "rounds": 6, "patience": 3},
    "model": {"horizon": 3, "samples": 64, "rounds": 3, "patience": 3},
}


STANDARD_PLANES = ("axial", "coronal", "sagittal")  # named goals: through the centre of the volume's foreground


def standard_plane(volume: torch.Tensor, name: str, spatial_size: int, threshold: float = 0.05) -> Pose:
    """The named plane ``name`` of :data:`STANDARD_PLANES` on ``volume`` (C, X, Y, Z, with its affine): the
    canonical orientation through the centre of the foreground box (intensities above ``threshold``), at the base
    spacing of ``spatial_size``-pixel slices, as the navigators start. On a template in MNI space, ``"sagittal"`` is
    the mid-sagittal plane to within the head's asymmetry.

    Raises:
        ValueError: for an unknown name, or a volume without foreground.
    """
    if name not in STANDARD_PLANES:
        raise ValueError(f"unknown plane {name!r}; the named planes are {', '.join(STANDARD_PLANES)}.")
    sampler = RandSliceTrajectory(1, spatial_size, threshold=threshold)
    return sampler.centred_pose(sampler.frame(volume), name, dtype=torch.float64)


LANDMARK_PLANES = {  # named goals through the commissures, as neuroradiology prescribes them: the plane as the
    # canonical one of a head aligned to its own AC-PC frame (Talairach's convention: AC the origin, PC straight
    # behind it, the inter-hemispheric point straight above)
    "acpc-axial": "axial",  # through AC and PC, perpendicular to the mid-sagittal plane
    "acpc-coronal": "coronal",  # through AC, perpendicular to the AC-PC line (Talairach's VCA plane)
    "midsagittal": "sagittal",  # through AC, PC and the inter-hemispheric point
}
LANDMARKS = ("AC", "PC", "IH")  # anterior and posterior commissure, an inter-hemispheric point high in the midline


def acpc_frame(landmarks: Mapping[str, Sequence[float]]) -> torch.Tensor:
    """The head's own RAS frame (3, 3) from its landmarks (world mm, :data:`LANDMARKS`): columns right, anterior
    (PC to AC) and superior (towards IH, perpendicular to AC-PC); the identity for a head in Talairach alignment.

    Raises:
        ValueError: for a missing or non-finite landmark, AC on PC, or IH on the AC-PC line.
    """
    missing = [name for name in LANDMARKS if name not in landmarks]
    if missing:
        raise ValueError(f"landmarks lack {', '.join(missing)}; give {', '.join(LANDMARKS)} in world mm (RAS).")
    points = {}
    for name in LANDMARKS:
        try:
            point = torch.as_tensor(landmarks[name], dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):  # text, nested or ragged values
            point = torch.full((0,), math.nan)
        if point.shape != (3,) or not bool(torch.isfinite(point).all()):
            raise ValueError(f"landmark {name} must be 3 finite world coordinates in mm, got {landmarks[name]!r}.")
        points[name] = point
    anterior = points["AC"] - points["PC"]
    if float(anterior.norm()) < 1.0:
        raise ValueError("landmarks AC and PC are less than 1 mm apart; they must be the two commissures.")
    anterior = anterior / anterior.norm()
    right = torch.linalg.cross(anterior, points["IH"] - points["AC"])
    if float(right.norm()) < 1.0:  # |AC-IH| sin(angle) under 1 mm: IH (nearly) on the AC-PC line
        raise ValueError("landmark IH lies on the AC-PC line; it must be a midline point above it.")
    right = right / right.norm()
    return torch.stack([right, anterior, torch.linalg.cross(right, anterior)], dim=-1)


def read_landmarks(path: str | os.PathLike) -> dict:
    """The head landmarks of a JSON file: ``{"AC": [x, y, z], "PC": [...], "IH": [...]}`` in world mm (RAS).

    Raises:
        FileNotFoundError, ValueError: naming the file, for a missing file or bad landmarks.
    """
    landmarks = read_json_object(path)
    try:
        acpc_frame(landmarks)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
    return landmarks


def landmark_plane(
    volume: torch.Tensor,
    name: str,
    landmarks: Mapping[str, Sequence[float]],
    spatial_size: int,
    threshold: float = 0.05,
) -> Pose:
    """The landmark plane ``name`` of :data:`LANDMARK_PLANES` on ``volume``: the canonical plane of the head's
    :func:`acpc_frame`, centred on the anterior commissure, at the spacing :func:`standard_plane` uses.

    Raises:
        ValueError: for an unknown name or bad landmarks (see :func:`acpc_frame`).
    """
    if name not in LANDMARK_PLANES:
        raise ValueError(f"unknown landmark plane {name!r}; they are {', '.join(LANDMARK_PLANES)}.")
    frame, canonical = acpc_frame(landmarks), standard_plane(volume, LANDMARK_PLANES[name], spatial_size, threshold)
    centre = torch.as_tensor(landmarks["AC"], dtype=torch.float64)
    return Pose(centre, frame @ canonical.rotation, canonical.spacing)


def named_plane(
    volume: torch.Tensor,
    name: str,
    spatial_size: int,
    landmarks: Mapping[str, Sequence[float]] | None = None,
    threshold: float = 0.05,
) -> Pose:
    """The pose of a named plane on ``volume``: one of :data:`STANDARD_PLANES` (:func:`standard_plane`) or, given
    the head's ``landmarks``, one of :data:`LANDMARK_PLANES` (:func:`landmark_plane`).

    Raises:
        ValueError: for an unknown name, a landmark plane without landmarks, or bad landmarks.
    """
    if name in LANDMARK_PLANES and landmarks is not None:
        return landmark_plane(volume, name, landmarks, spatial_size, threshold)
    if name in STANDARD_PLANES:
        return standard_plane(volume, name, spatial_size, threshold)
    hint = " (the planes through the commissures need the head's landmarks)" if name in LANDMARK_PLANES else ""
    named = ", ".join(plane_names(landmarks is not None))
    raise ValueError(f"unknown plane {name!r}{hint}; the named planes are {named}.")


def plane_names(with_landmarks: bool = False) -> tuple[str, ...]:
    """The named planes a goal may be: :data:`STANDARD_PLANES`, and :data:`LANDMARK_PLANES` given landmarks."""
    return (*STANDARD_PLANES, *(LANDMARK_PLANES if with_landmarks else ()))


def action_bounds(regime: NavigationRegime = NAVIGATION_REGIME) -> torch.Tensor:
    """Per-component bounds (7,) of one action in ``regime``: translation (mm), rotation (rad), log-zoom."""
    return torch.tensor([regime.max_translation] * 3 + [regime.max_rotation] * 3 + [regime.max_log_zoom])


class WorldModel(Protocol):
    """What the planner needs of a model: the latents of a slice, and the latents of the slice an action sequence
    would reach from the current state (the slices seen so far, their poses and the actions between them)."""

    def latents(self, slices: torch.Tensor) -> torch.Tensor:
        """Slices (N, C, h, w) -> latents (N, ...)."""

    def imagine(self, seen: torch.Tensor, poses: Pose, actions: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Latents (N, ...) of the slice each candidate (N, H, 7) reaches after the ``seen`` slices (k, C, h, w) at
        ``poses`` (batch k) with ``actions`` (k - 1, 7) between them."""


class RendererModel:
    """The true renderer as the model (the planner's upper bound): candidates are applied to the last pose and the
    volume rendered there. Latents are the slice at several scales (average-pooled by each of ``scales``, each
    scale weighted alike): the coarse scales give far goals a smooth basin, the finest places the plane exactly."""

    def __init__(self, volume: torch.Tensor, spatial_size: int, scales: Sequence[int] = (1, 2, 4, 8)) -> None:
        self.volume, self.render, self.scales = volume, RenderSlices(spatial_size), tuple(scales)

    def latents(self, slices: torch.Tensor) -> torch.Tensor:
        pooled = [torch.nn.functional.avg_pool2d(slices.float(), s).flatten(1) * s for s in self.scales]
        return torch.cat(pooled, dim=1)

    def imagine(self, seen: torch.Tensor, poses: Pose, actions: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        pose = poses[-1]
        for step in range(candidates.shape[1]):
            pose = apply_action(pose, candidates[:, step].double())
        return self.latents(self.render(self.volume, pose))


class NavigatorModel:
    """A trained :class:`~monai_slicenav.networks.SliceNavigator`: latents are the frozen tokenizer's token grids,
    and a candidate is imagined by an open-loop rollout from the last ``context`` true slices (the volume is never
    read)."""

    def __init__(self, navigator: SliceNavigator, context: int = 2) -> None:
        self.navigator, self.context = navigator.eval(), int(context)

    def latents(self, slices: torch.Tensor) -> torch.Tensor:
        return self.navigator.tokens(slices[:, None])[:, 0]

    @torch.no_grad()
    def imagine(self, seen: torch.Tensor, poses: Pose, actions: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        count, horizon = candidates.shape[:2]
        k = max(1, min(self.context, len(seen), self.navigator.dynamics.config.max_steps - horizon))
        context = seen[-k:][None].expand(count, -1, -1, -1, -1)
        before = actions[len(actions) - (k - 1) :].float()[None].expand(count, -1, -1)
        spacing = poses.spacing[-k:].float()[None].expand(count, -1)
        imagined = rollout(self.navigator, context, torch.cat([before, candidates.float()], dim=1), spacing)
        return imagined[:, -1]


class WarpModel(NavigatorModel):
    """The in-plane warp as the model (no learning), compared in a trained navigator's latent space: a candidate is
    imagined by warping the last slice seen by the in-plane part of each of its actions in turn (shift, rotation
    about the normal, zoom; zeros outside), as the controllability figures' ``warp`` reference does one step ahead.
    It cannot see through the plane, so it tells what a world model adds to the geometry built into it."""

    @torch.no_grad()
    def imagine(self, seen: torch.Tensor, poses: Pose, actions: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        count = candidates.shape[0]
        image = seen[-1:].float().expand(count, -1, -1, -1)
        spacing = poses.spacing[-1:].float().expand(count)
        for step in candidates.float().unbind(1):
            image = inplane_warp(image, step, spacing)
            spacing = spacing * torch.exp(step[:, 6])  # the warped slice's pixel size, as a rollout follows it
        return self.latents(image)


@dataclass
class PlanResult:
    """An executed episode: the poses visited (batch T + 1), the actions taken (T, 7), the slices seen
    (T + 1, C, h, w), the cost of each slice reached (its latents' mean squared distance to the goal's, in the
    model's latent space), and how many candidate sequences the model imagined."""

    poses: Pose
    actions: torch.Tensor
    slices: torch.Tensor
    costs: list[float] = field(default_factory=list)
    model_calls: int = 0


def plan(
    volume: torch.Tensor,
    start: Pose,
    goal: torch.Tensor,
    model: WorldModel,
    horizon: int = 2,
    steps: int = 8,
    samples: int = 64,
    elites: int = 8,
    rounds: int = 3,
    regime: NavigationRegime = NAVIGATION_REGIME,
    patience: int = 2,
    seed: int = 0,
) -> PlanResult:
    """Navigate from ``start`` (a single pose) towards the ``goal`` slice (C, h, w) on ``volume`` (C, X, Y, Z).

    Args:
        volume: the volume the executed actions are rendered on.
        start: the first slice's pose.
        goal: the goal slice, the size of the slices rendered.
        model: imagines where candidate actions lead (:class:`NavigatorModel`, :class:`RendererModel`).
        horizon: actions per candidate sequence.
        steps: most actions executed.
        samples, elites, rounds: the cross-entropy method's candidates per round, refitted best, rounds per step.
        regime: bounds every action component (:func:`action_bounds`), as in pretraining.
        patience: stop after this many executed steps without a lower planned cost.
        seed: seeds the candidates.

    Raises:
        ValueError: for a non-finite goal, or one whose size is not the rendered slices'.
    """
    if goal.ndim != 3 or not bool(torch.isfinite(goal).all()):
        raise ValueError(f"The goal must be one finite slice (C, h, w), got shape {tuple(goal.shape)}.")
    render = RenderSlices(tuple(goal.shape[1:]))
    bounds = action_bounds(regime)
    generator = torch.Generator().manual_seed(seed)
    target = model.latents(goal[None].float())
    poses = Pose(start.center[None], start.rotation[None], start.spacing[None]).to(dtype=torch.float64)
    seen, taken, costs, calls = render(volume, poses), torch.zeros(0, 7), [], 0
    best, stale = float((model.latents(seen) - target).pow(2).mean()), 0
    mean = torch.zeros(horizon, 7)
    for _ in range(steps):
        spread = bounds.expand(horizon, 7) / 2
        for _ in range(rounds):
            noise = torch.randn(samples, horizon, 7, generator=generator)
            candidates = torch.maximum(torch.minimum(mean + spread * noise, bounds), -bounds)
            candidates[0] = mean  # the current plan stays a candidate: a round never loses it
            cost = (model.imagine(seen, poses, taken, candidates) - target).flatten(1).pow(2).mean(1)
            calls += samples
            chosen = candidates[cost.argsort()[:elites]]
            mean, spread = chosen[0], chosen.std(0) + 1e-3 * bounds  # the best so far, and the elites' spread
        pose = apply_action(poses[-1], mean[0].double())
        poses = Pose(
            *(torch.cat([getattr(poses, f), getattr(pose, f)[None]]) for f in ("center", "rotation", "spacing"))
        )
        seen = torch.cat([seen, render(volume, pose[None])])
        taken = torch.cat([taken, mean[0][None]])
        observed = float((model.latents(seen[-1:]) - target).pow(2).mean())  # the slice reached, as the model sees it
        costs.append(observed)
        stale = 0 if observed < best - 1e-9 else stale + 1
        best = min(best, observed)
        mean = torch.cat([mean[1:], torch.zeros(1, 7)])  # warm start: the rest of the plan, then no move
        if stale >= patience:
            break
    return PlanResult(poses, taken, seen, costs, calls)


def pose_error(reached: Pose, goal: Pose) -> tuple[float, float]:
    """Distance (mm) between the two slice centres and angle (degrees) between their normals."""
    distance = float((reached.center - goal.center).norm())
    cosine = float((reached.rotation[..., 2] * goal.rotation[..., 2]).sum().clamp(-1, 1))
    return distance, float(torch.rad2deg(torch.arccos(torch.tensor(abs(cosine)))))


def render_goal(volume: torch.Tensor, pose: Pose, spatial_size: Sequence[int] | int) -> torch.Tensor:
    """The goal slice (C, h, w) at ``pose`` (a single pose) on ``volume``."""
    return RenderSlices(spatial_size)(volume, Pose(pose.center[None], pose.rotation[None], pose.spacing[None]))[0]
