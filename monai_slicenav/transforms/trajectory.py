"""Random slice-navigation trajectories: smooth, bounded random walks of slice poses inside the foreground.

The random transform only samples numbers (``randomize``); the walk itself is deterministic given those numbers
and the volume, so ``(volume, poses)`` rebuilds the rendered slices exactly.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import TransformBackends

from ..geometry import (
    ACTION_DIM,
    CANONICAL_ORIENTATIONS,
    Pose,
    as_slice_size,
    axis_angle_to_matrix,
    canonical_rotation,
    quaternion_to_matrix,
)
from ..volume import as_volume, foreground_box, voxel_sizes
from .regime import NAVIGATION_REGIME

__all__ = [
    "TRAJECTORY_MODES",
    "START_ORIENTATIONS",
    "RandSliceTrajectory",
    "RandSliceTrajectoryd",
    "RandSliceTrajectoryD",
    "RandSliceTrajectoryDict",
]

# Which action components (delta-centre xyz, delta-rotation xyz, delta-log-spacing) each mode moves.
TRAJECTORY_MODES: dict[str, tuple[int, ...]] = {
    "scroll": (2,),
    "tilt": (3, 4, 5),
    "zoom": (6,),
    "mixed": (0, 1, 2, 3, 4, 5, 6),
}
START_ORIENTATIONS = ("canonical", "random", *CANONICAL_ORIENTATIONS)
_BOX_TOLERANCE = 1e-6  # voxels


class RandSliceTrajectory(RandomizableTransform):
    """Sample ``num_steps + 1`` slice poses and the ``num_steps`` actions between them.

    Each step moves the slice by a smooth random walk (momentum on a velocity, bounded per step), in the frame of
    the current slice. Centres stay inside the foreground bounding box: a step that would leave it bounces
    (the translation velocity is reversed) or, failing that, keeps the centre in place. Spacing stays within
    ``zoom_range`` of the base spacing the same way.

    Args:
        num_steps: T, the number of actions (T + 1 poses).
        spatial_size: slice size (h, w) in pixels the trajectory is meant for; sets the default spacing.
        mode: ``{"scroll", "tilt", "zoom", "mixed"}``: translation along the normal, rotations, spacing changes,
            or all of them plus in-plane shifts.
        start_orientation: ``{"canonical", "random", "axial", "coronal", "sagittal"}``: ``"canonical"`` draws one of
            the three RAS views, ``"random"`` a uniformly random rotation. Defaults to ``"canonical"``.
        spacing: base in-plane pixel size in mm; ``None`` fits the foreground's largest extent into the slice,
            never finer than the finest voxel size.
        zoom_range: (min, max) spacing as multiples of the base spacing.
        max_translation: largest centre displacement per step, in mm.
        max_rotation: largest rotation per step, in radians.
        max_log_zoom: largest absolute change of the log spacing per step.
        momentum: in [0, 1): how much of the previous step's velocity is kept; higher is smoother (0: independent
            steps).
        threshold: voxels above it (in any channel) are foreground. Defaults to 0.0.
        jump_probability: in [0, 1]: chance that a step is a jump of ``jump_steps`` steps at once (the step's move
            multiplied by ``jump_steps``, so per-step bounds scale with it), as when a reader skips through a
            stack (0: no jumps; the random stream is then the same as without the option).
        jump_steps: how many steps a jump covers, >= 1.
        scroll_probability: in [0, 1]: chance that a whole trajectory is a scan through the volume instead: every
            step a translation of ``scroll_step`` mm along the slice normal (one direction, bouncing at the
            foreground box), nothing else, as the consecutive slices of a window downstream (``Lift3D``)
            (0: none; the random stream is then the same as without the option).
        scroll_step: mm a scroll trajectory moves per step, > 0 (the slice spacing of the scans downstream).

    The regime's defaults (mode, zoom_range, max_translation, max_rotation, max_log_zoom, momentum,
    jump_probability, jump_steps, scroll_probability, scroll_step) are :data:`NAVIGATION_REGIME`'s, the pretraining
    bundles' regime.

    Raises:
        ValueError: for a bad argument, or at call time for an invalid volume or an empty foreground.
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        num_steps: int,
        spatial_size: Sequence[int] | int,
        mode: str = NAVIGATION_REGIME.mode,
        start_orientation: str = "canonical",
        spacing: float | None = None,
        zoom_range: tuple[float, float] = NAVIGATION_REGIME.zoom_range,
        max_translation: float = NAVIGATION_REGIME.max_translation,
        max_rotation: float = NAVIGATION_REGIME.max_rotation,
        max_log_zoom: float = NAVIGATION_REGIME.max_log_zoom,
        momentum: float = NAVIGATION_REGIME.momentum,
        threshold: float = 0.0,
        jump_probability: float = NAVIGATION_REGIME.jump_probability,
        jump_steps: int = NAVIGATION_REGIME.jump_steps,
        scroll_probability: float = NAVIGATION_REGIME.scroll_probability,
        scroll_step: float = NAVIGATION_REGIME.scroll_step,
    ) -> None:
        RandomizableTransform.__init__(self, prob=1.0)
        if int(num_steps) < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}.")
        if mode not in TRAJECTORY_MODES:
            raise ValueError(f"mode must be one of {tuple(TRAJECTORY_MODES)}, got {mode!r}.")
        if start_orientation not in START_ORIENTATIONS:
            raise ValueError(f"start_orientation must be one of {START_ORIENTATIONS}, got {start_orientation!r}.")
        if spacing is not None and not spacing > 0:
            raise ValueError(f"spacing must be > 0 mm or None, got {spacing}.")
        if not 0 < zoom_range[0] <= 1 <= zoom_range[1]:
            raise ValueError(f"zoom_range must satisfy 0 < min <= 1 <= max, got {zoom_range}.")
        if min(max_translation, max_rotation, max_log_zoom) < 0:
            raise ValueError("max_translation, max_rotation and max_log_zoom must be >= 0.")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}.")
        if not 0 <= jump_probability <= 1 or int(jump_steps) < 1:
            raise ValueError(
                f"jump_probability must be in [0, 1] and jump_steps >= 1, got {jump_probability}, {jump_steps}."
            )
        if not 0 <= scroll_probability <= 1 or not scroll_step > 0:
            raise ValueError(
                f"scroll_probability must be in [0, 1], scroll_step > 0 mm: {scroll_probability}, {scroll_step}."
            )
        self.num_steps = int(num_steps)
        self.spatial_size = as_slice_size(spatial_size)
        self.mode = mode
        self.start_orientation = start_orientation
        self.spacing = spacing
        self.zoom_range = (float(zoom_range[0]), float(zoom_range[1]))
        self.max_translation = float(max_translation)
        self.max_rotation = float(max_rotation)
        self.max_log_zoom = float(max_log_zoom)
        self.momentum = float(momentum)
        self.threshold = float(threshold)
        self.jump_probability, self.jump_steps = float(jump_probability), int(jump_steps)
        self.scroll_probability, self.scroll_step = float(scroll_probability), float(scroll_step)
        self._scroll = 0.0  # this trajectory's scroll per step in mm along the normal (signed); 0: a random walk
        self._jumps = np.zeros(self.num_steps, dtype=bool)
        self._start_fraction = np.full(3, 0.5)
        self._orientation = "axial"
        self._quaternion = np.array([1.0, 0.0, 0.0, 0.0])
        self._noise = np.zeros((self.num_steps, ACTION_DIM))

    def randomize(self, data: object = None) -> None:
        """Draw every random number of one trajectory from ``self.R``."""
        super().randomize(None)
        self._start_fraction = self.R.uniform(0.0, 1.0, size=3)
        names = list(CANONICAL_ORIENTATIONS)
        if self.start_orientation == "canonical":
            self._orientation = names[self.R.randint(len(names))]
        else:
            self._orientation = self.start_orientation
        quaternion = self.R.normal(size=4)
        self._quaternion = quaternion / np.linalg.norm(quaternion)
        self._noise = self.R.normal(size=(self.num_steps, ACTION_DIM))
        if self.jump_probability > 0:  # drawn only when asked, so seeds without jumps keep their trajectories
            self._jumps = self.R.uniform(size=self.num_steps) < self.jump_probability
        if self.scroll_probability > 0:  # likewise
            scroll, direction = self.R.uniform(size=2)
            self._scroll = (1.0 if direction < 0.5 else -1.0) * self.scroll_step * (scroll < self.scroll_probability)

    def __call__(self, img: torch.Tensor, randomize: bool = True, name: str = "image") -> tuple[Pose, torch.Tensor]:
        """Sample a trajectory on ``img`` (C, X, Y, Z); ``name`` labels it in error messages.

        Returns:
            poses with batch shape (T + 1,) and float32 actions (T, 7), ``poses[t + 1] == apply_action(poses[t],
            actions[t])``.
        """
        frame = self.frame(img, name)
        if randomize:
            self.randomize()
        return self.walk(frame)

    def frame(self, img: torch.Tensor, name: str = "image") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The (4, 4) affine and the inclusive voxel foreground box ``lo``, ``hi`` of ``img`` that trajectories
        on it need: one validation and two max-projection passes over the volume, shared by every trajectory
        sampled from it.

        Raises:
            ValueError: for an invalid volume or an empty foreground.
        """
        data, affine = as_volume(img, name, check_values=False)  # foreground_box reports NaN/Inf in its own pass
        lo, hi = (b.numpy().astype(np.float64) for b in foreground_box(data, self.threshold, name))
        return affine.numpy(), lo, hi

    def walk(self, frame: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[Pose, torch.Tensor]:
        """The trajectory of the last drawn random numbers on a volume's :meth:`frame` (deterministic)."""
        affine_np, lo, hi = frame
        world_to_voxel = np.linalg.inv(affine_np[:3, :3])
        start_voxel = lo + self._start_fraction * (hi - lo)
        steps = self._velocity_steps()

        step_rotations = axis_angle_to_matrix(torch.from_numpy(steps[:, 3:6])).numpy()  # (T, 3, 3)
        rotations = [self._start_rotation()]
        for step_rotation in step_rotations:
            rotations.append(rotations[-1] @ step_rotation)
        rotation = np.stack(rotations)  # (T + 1, 3, 3)

        # Translations in voxel units, so the foreground box is axis-aligned whatever the affine.
        voxel_steps = np.einsum("ij,tjk,tk->ti", world_to_voxel, rotation[:-1], steps[:, :3])  # (T, 3)
        steps[:, :3] *= _bounce_factors(voxel_steps, start_voxel, lo, hi)[:, None]
        log_zoom_range = np.log(np.asarray(self.zoom_range))
        steps[:, 6] *= _bounce_factors(steps[:, 6:], np.zeros(1), log_zoom_range[:1], log_zoom_range[1:])

        world_steps = np.einsum("tij,tj->ti", rotation[:-1], steps[:, :3])  # (T, 3)
        start_center = affine_np[:3, :3] @ start_voxel + affine_np[:3, 3]
        center = start_center + np.concatenate([np.zeros((1, 3)), np.cumsum(world_steps, axis=0)])
        log_zoom = np.concatenate([[0.0], np.cumsum(steps[:, 6])])
        spacing = self._base_spacing(affine_np, lo, hi) * np.exp(log_zoom)
        poses = Pose(
            torch.from_numpy(center).float(), torch.from_numpy(rotation).float(), torch.from_numpy(spacing).float()
        )
        return poses, torch.from_numpy(steps).float()

    def centred_pose(
        self,
        frame: tuple[np.ndarray, np.ndarray, np.ndarray],
        orientation: str = "axial",
        dtype: torch.dtype = torch.float32,
    ) -> Pose:
        """The pose at the centre of a volume's foreground box (its :meth:`frame`), in a canonical orientation
        (``"axial"``, ``"coronal"`` or ``"sagittal"``), at the base spacing trajectories start from: where an
        interactive navigation begins."""
        affine_np, lo, hi = frame
        centre = affine_np[:3, :3] @ ((lo + hi) / 2) + affine_np[:3, 3]
        return Pose.create(centre, orientation, self._base_spacing(affine_np, lo, hi), dtype=dtype)

    def _base_spacing(self, affine: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
        if self.spacing is not None:
            return self.spacing
        sizes = voxel_sizes(torch.as_tensor(affine, dtype=torch.float64)).numpy()
        extent_mm = float(((hi - lo + 1) * sizes).max())
        return max(float(sizes.min()), extent_mm / max(self.spatial_size))

    def _start_rotation(self) -> np.ndarray:
        if self.start_orientation != "random":
            return canonical_rotation(self._orientation, dtype=torch.float64).numpy()
        return quaternion_to_matrix(self._quaternion).numpy()

    def _velocity_steps(self) -> np.ndarray:
        """Per-step actions from the drawn noise: an AR(1) velocity per component whose stationary standard
        deviation is half the bound (so steps vary in size), then norm-clipped per group to the bound; or, for a
        scroll trajectory, the same translation along the normal at every step."""
        if self._scroll:
            return np.tile(np.eye(ACTION_DIM)[2] * self._scroll, (self.num_steps, 1))
        bounds = 0.5 * np.array([self.max_translation] * 3 + [self.max_rotation] * 3 + [self.max_log_zoom])
        active = np.zeros(ACTION_DIM)
        active[list(TRAJECTORY_MODES[self.mode])] = 1.0
        innovation = math.sqrt(1.0 - self.momentum**2)
        # AR(1) in closed form: v_t = m^t b n_0 + sum_{1 <= s <= t} m^(t - s) c b n_s, with c = sqrt(1 - m^2)
        lags = np.arange(self.num_steps)[:, None] - np.arange(self.num_steps)[None, :]
        weights = np.where(lags >= 0, self.momentum ** np.maximum(lags, 0), 0.0)
        weights[:, 1:] *= innovation
        steps = (weights @ (self._noise * bounds)) * active
        for group, bound in ((slice(0, 3), self.max_translation), (slice(3, 6), self.max_rotation)):
            norms = np.linalg.norm(steps[:, group], axis=1, keepdims=True)
            steps[:, group] *= np.minimum(1.0, bound / np.maximum(norms, 1e-12))
        steps[:, 6] = np.clip(steps[:, 6], -self.max_log_zoom, self.max_log_zoom)
        steps[self._jumps] *= self.jump_steps
        return steps


def _bounce_factors(increments: np.ndarray, start: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Per-step factors in {1, -1, 0} keeping the walk ``start + cumsum(factors * increments)`` inside [lo, hi].

    At the first step that leaves the box, that step and all later ones are reversed (a bounce); if the reversed
    step still leaves the box, that step is dropped (factor 0). ``start`` must lie inside the box.

    Args:
        increments: (T, d) steps; start: (d,) start point; lo, hi: (d,) inclusive box bounds.
    """
    factors = np.ones(len(increments))
    first_unchecked = 0
    while True:
        positions = start + np.cumsum(increments * factors[:, None], axis=0)
        outside = ((positions < lo - _BOX_TOLERANCE) | (positions > hi + _BOX_TOLERANCE)).any(axis=1)
        bad = np.flatnonzero(outside[first_unchecked:])
        if bad.size == 0:
            return factors
        k = first_unchecked + int(bad[0])
        factors[k:] *= -1
        before = positions[k - 1] if k else start
        moved = before + factors[k] * increments[k]
        if ((moved < lo - _BOX_TOLERANCE) | (moved > hi + _BOX_TOLERANCE)).any():
            factors[k] = 0.0
        first_unchecked = k + 1


class RandSliceTrajectoryd(RandomizableTransform, MapTransform):
    """Dictionary wrapper of :class:`RandSliceTrajectory`.

    Samples one trajectory on the volume under the single key in ``keys`` and stores the packed poses
    (T + 1, 13) under ``pose_key`` and the actions (T, 7) under ``action_key``; the volume is left unchanged.

    Args:
        keys: one key, the reference volume whose affine and foreground define the trajectory.
        num_steps: as in :class:`RandSliceTrajectory`, and so are ``spatial_size``, ``mode``, ``start_orientation``,
            ``spacing``, ``zoom_range``, ``max_translation``, ``max_rotation``, ``max_log_zoom``, ``momentum``,
            ``threshold``, ``jump_probability``, ``jump_steps``, ``scroll_probability`` and ``scroll_step``.
        pose_key: output key of the packed poses. Defaults to ``"poses"``.
        action_key: output key of the actions. Defaults to ``"actions"``.
        num_samples: trajectories per volume. With more than one, a list of that many dicts is returned (sharing
            the volumes, not copying them), which ``Compose`` maps the next transforms over and MONAI's
            ``list_data_collate`` flattens into the batch, as with ``RandCropByPosNegLabeld``. Rendering costs far
            less than loading or synthesising a volume, so several trajectories per volume keep training fed
            (see ``bench/synth.py``). Defaults to 1 (a dict).
        allow_missing_keys: return the data unchanged when the key is absent.
    """

    backend = RandSliceTrajectory.backend

    def __init__(
        self,
        keys: KeysCollection,
        num_steps: int,
        spatial_size: Sequence[int] | int,
        mode: str = NAVIGATION_REGIME.mode,
        start_orientation: str = "canonical",
        spacing: float | None = None,
        zoom_range: tuple[float, float] = NAVIGATION_REGIME.zoom_range,
        max_translation: float = NAVIGATION_REGIME.max_translation,
        max_rotation: float = NAVIGATION_REGIME.max_rotation,
        max_log_zoom: float = NAVIGATION_REGIME.max_log_zoom,
        momentum: float = NAVIGATION_REGIME.momentum,
        threshold: float = 0.0,
        jump_probability: float = NAVIGATION_REGIME.jump_probability,
        jump_steps: int = NAVIGATION_REGIME.jump_steps,
        scroll_probability: float = NAVIGATION_REGIME.scroll_probability,
        scroll_step: float = NAVIGATION_REGIME.scroll_step,
        pose_key: str = "poses",
        action_key: str = "actions",
        num_samples: int = 1,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob=1.0)
        if len(self.keys) != 1:
            raise ValueError(f"RandSliceTrajectoryd takes exactly one reference key, got {self.keys}.")
        if int(num_samples) < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
        self.num_samples = int(num_samples)
        self.sampler = RandSliceTrajectory(
            num_steps, spatial_size, mode, start_orientation, spacing, zoom_range, max_translation, max_rotation,
            max_log_zoom, momentum, threshold, jump_probability, jump_steps, scroll_probability, scroll_step,
        )  # fmt: skip
        self.pose_key = pose_key
        self.action_key = action_key

    @classmethod
    def from_regime(cls, navigation: Mapping, keys: KeysCollection = "image", **settings) -> RandSliceTrajectoryd:
        """A sampler of the regime a trained model recorded (``encoder.json``'s ``navigation``: these keyword
        arguments), with ``settings`` overriding single ones (``threshold``, ``num_steps``, ...): how inference,
        probes and the navigator draw trajectories for a trained model, inside the regime it learned.

        Raises:
            ValueError: for a ``navigation`` that is not a mapping of this class's arguments (names the unknown).
        """
        if not isinstance(navigation, Mapping):
            raise ValueError(f"navigation must be a mapping of RandSliceTrajectoryd arguments, got {navigation!r}.")
        known = set(inspect.signature(cls.__init__).parameters) - {"self", "keys"}
        unknown = sorted(set(navigation) - known)
        if unknown:
            raise ValueError(f"navigation holds unknown arguments {unknown}; known: {sorted(known)}.")
        return cls(keys, **{**dict(navigation), **settings})

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        self.sampler.set_random_state(seed, state)
        return self

    def __call__(
        self, data: Mapping[Hashable, torch.Tensor]
    ) -> dict[Hashable, torch.Tensor] | list[dict[Hashable, torch.Tensor]]:
        frames = {key: self.sampler.frame(data[key], name=str(key)) for key in self.key_iterator(dict(data))}
        samples = []
        for _ in range(self.num_samples):
            d = dict(data)
            for frame in frames.values():
                self.sampler.randomize()
                poses, actions = self.sampler.walk(frame)
                d[self.pose_key] = poses.as_tensor()
                d[self.action_key] = actions
            samples.append(d)
        return samples[0] if self.num_samples == 1 else samples


RandSliceTrajectoryD = RandSliceTrajectoryDict = RandSliceTrajectoryd
