"""Slice poses, relative actions and sampling points (pure torch, batched over any leading dims).

Conventions (the geometry section of the project design; the tests in tests/test_geometry.py hold them):

* World space is the millimetre space of the image affine (RAS for NIfTI/MONAI defaults).
* A :class:`Pose` is a slice plane: ``center`` (..., 3) in mm, ``rotation`` (..., 3, 3) whose columns are the
  slice's column direction ``u`` (pixel index ``j`` grows along it), row direction ``v`` (pixel index ``i``
  grows along it) and normal ``n = u x v``, and ``spacing`` (...) the in-plane pixel size in mm.
* Pixel ``(i, j)`` of an ``h x w`` slice sits at ``c + s * ((j - (w - 1) / 2) * u + (i - (h - 1) / 2) * v)``.
* An action is the pose of ``p1`` seen from the frame of ``p0``: a (..., 7) vector of delta-centre (3, mm, in the
  frame of ``p0``), delta-rotation (3, axis-angle in radians, in the frame of ``p0``) and delta-log-spacing (1).
  ``apply_action(p0, relative(p0, p1)) == p1`` and a zero action is the identity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from monai.data.utils import affine_to_spacing

__all__ = [
    "ACTION_DIM",
    "POSE_DIM",
    "CANONICAL_ORIENTATIONS",
    "Pose",
    "skew",
    "axis_angle_to_matrix",
    "matrix_to_axis_angle",
    "canonical_rotation",
    "relative",
    "apply_action",
    "compose_actions",
    "invert_action",
    "slice_points",
    "inplane_warp",
    "as_slice_size",
    "POSE_VECTOR_DIM",
    "pose_vector",
    "gap_matrix",
]

ACTION_DIM = 7
POSE_DIM = 13  # packed pose: center (3) + rotation (9, row-major) + spacing (1)
POSE_VECTOR_DIM = 10  # pose-vector target: normalised position (3) + column direction (3) + normal (3) + log-scale (1)

# Radiological display conventions in RAS world space: columns (u), rows (v); the normal is u x v.
CANONICAL_ORIENTATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "axial": ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0)),  # patient right on image left, anterior on top; normal +S
    "coronal": ((-1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),  # patient right on image left, superior on top; normal -A
    "sagittal": ((0.0, -1.0, 0.0), (0.0, 0.0, -1.0)),  # anterior on image left, superior on top; normal +R
}

# Below this angle (radians) the Rodrigues coefficients use their Taylor expansions.
_SMALL_ANGLE = 1e-3
# Above pi minus this angle the logarithm reads the axis from the symmetric part of the rotation.
_NEAR_PI = 1e-2


@dataclass(frozen=True)
class Pose:
    """A batch of slice poses.

    Args:
        center: (..., 3) slice centre in world millimetres.
        rotation: (..., 3, 3) rotation; columns are the column direction, the row direction and the normal.
        spacing: (...) in-plane pixel size in millimetres (the slice's scale), strictly positive.

    Raises:
        ValueError: when the shapes do not agree.
    """

    center: torch.Tensor
    rotation: torch.Tensor
    spacing: torch.Tensor

    def __post_init__(self) -> None:
        batch = tuple(self.spacing.shape)
        if tuple(self.center.shape) != batch + (3,) or tuple(self.rotation.shape) != batch + (3, 3):
            raise ValueError(
                "Pose expects center (..., 3), rotation (..., 3, 3) and spacing (...) with the same leading dims, "
                f"got center {tuple(self.center.shape)}, rotation {tuple(self.rotation.shape)}, "
                f"spacing {tuple(self.spacing.shape)}."
            )

    @property
    def batch_shape(self) -> torch.Size:
        """Leading (batch) dimensions of the pose."""
        return self.spacing.shape

    def to(self, *args, **kwargs) -> Pose:
        """Move or cast all fields, with the arguments of :meth:`torch.Tensor.to`."""
        return Pose(
            self.center.to(*args, **kwargs), self.rotation.to(*args, **kwargs), self.spacing.to(*args, **kwargs)
        )

    def __getitem__(self, index) -> Pose:
        """Index the batch dimensions, e.g. ``poses[3]`` or ``poses[:, 1:]``."""
        index = index if isinstance(index, tuple) else (index,)
        return Pose(self.center[index], self.rotation[index], self.spacing[index])

    def as_tensor(self) -> torch.Tensor:
        """Pack into a (..., 13) tensor: centre, row-major rotation, spacing (collates in a DataLoader)."""
        flat_rotation = self.rotation.reshape(*self.batch_shape, 9)
        return torch.cat([self.center, flat_rotation, self.spacing[..., None]], dim=-1)

    @classmethod
    def from_tensor(cls, packed: torch.Tensor) -> Pose:
        """Unpack a (..., 13) tensor written by :meth:`as_tensor`.

        Raises:
            ValueError: when the last dimension is not 13.
        """
        packed = torch.as_tensor(packed)
        if packed.ndim < 1 or packed.shape[-1] != POSE_DIM:
            raise ValueError(f"A packed pose has {POSE_DIM} values in its last dim, got shape {tuple(packed.shape)}.")
        batch = packed.shape[:-1]
        return cls(packed[..., :3], packed[..., 3:12].reshape(*batch, 3, 3), packed[..., 12])

    @classmethod
    def create(
        cls,
        center: Sequence[float] | torch.Tensor,
        rotation: Sequence[Sequence[float]] | torch.Tensor | str = "axial",
        spacing: float | torch.Tensor = 1.0,
        dtype: torch.dtype = torch.float32,
    ) -> Pose:
        """Build one pose from plain values; ``rotation`` may name a canonical orientation (``"axial"`` ...)."""
        center_t = torch.as_tensor(center, dtype=dtype)
        if isinstance(rotation, str):
            rotation_t = canonical_rotation(rotation, dtype=dtype)
        else:
            rotation_t = torch.as_tensor(rotation, dtype=dtype)
        spacing_t = torch.as_tensor(spacing, dtype=dtype)
        return cls(center_t, rotation_t, spacing_t)


def skew(vector: torch.Tensor) -> torch.Tensor:
    """Cross-product matrices: (..., 3) -> (..., 3, 3) with ``skew(a) @ b == a x b``."""
    x, y, z = vector.unbind(-1)
    zero = torch.zeros_like(x)
    rows = (
        torch.stack([zero, -z, y], dim=-1),
        torch.stack([z, zero, -x], dim=-1),
        torch.stack([-y, x, zero], dim=-1),
    )
    return torch.stack(rows, dim=-2)


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula, (..., 3) axis-angle in radians -> (..., 3, 3) rotation; stable near zero."""
    theta_sq = (axis_angle * axis_angle).sum(-1)
    theta = theta_sq.sqrt()
    small = theta < _SMALL_ANGLE
    safe_theta = torch.where(small, torch.ones_like(theta), theta)
    sin_term = torch.where(small, 1.0 - theta_sq / 6.0, torch.sin(safe_theta) / safe_theta)
    cos_term = torch.where(small, 0.5 - theta_sq / 24.0, (1.0 - torch.cos(safe_theta)) / (safe_theta * safe_theta))
    k = skew(axis_angle)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    return eye + sin_term[..., None, None] * k + cos_term[..., None, None] * (k @ k)


def matrix_to_axis_angle(rotation: torch.Tensor) -> torch.Tensor:
    """Logarithm of a rotation, (..., 3, 3) -> (..., 3) axis-angle with angle in [0, pi]; stable at 0 and pi."""
    vee = torch.stack(
        [
            rotation[..., 2, 1] - rotation[..., 1, 2],
            rotation[..., 0, 2] - rotation[..., 2, 0],
            rotation[..., 1, 0] - rotation[..., 0, 1],
        ],
        dim=-1,
    )  # 2 sin(theta) * axis
    sin_theta = 0.5 * vee.norm(dim=-1)
    cos_theta = 0.5 * (rotation.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0)
    theta = torch.atan2(sin_theta, cos_theta)

    small = theta < _SMALL_ANGLE
    safe_sin = torch.where(small, torch.ones_like(sin_theta), sin_theta)
    factor = torch.where(small, 0.5 + theta * theta / 12.0, 0.5 * theta / safe_sin)
    regular = factor[..., None] * vee

    # Near pi, sin(theta) vanishes: read the axis from (R + R^T) / 2 - cos(theta) I = (1 - cos(theta)) a a^T.
    eye = torch.eye(3, dtype=rotation.dtype, device=rotation.device)
    outer = 0.5 * (rotation + rotation.transpose(-1, -2)) - cos_theta[..., None, None] * eye
    column = outer.diagonal(dim1=-2, dim2=-1).argmax(-1)
    picked = torch.take_along_dim(outer, column[..., None, None].expand(*column.shape, 3, 1), dim=-1)[..., 0]
    axis = picked / picked.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(rotation.dtype).tiny)
    sign = torch.where((axis * vee).sum(-1, keepdim=True) < 0, -1.0, 1.0).to(rotation.dtype)
    near_pi = theta[..., None] > math.pi - _NEAR_PI
    return torch.where(near_pi, sign * axis * theta[..., None], regular)


def canonical_rotation(
    orientation: str, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> torch.Tensor:
    """Rotation (3, 3) of a canonical RAS view, one of ``{"axial", "coronal", "sagittal"}``.

    Raises:
        ValueError: for an unknown orientation name.
    """
    if orientation not in CANONICAL_ORIENTATIONS:
        raise ValueError(f"Unknown orientation {orientation!r}; expected one of {sorted(CANONICAL_ORIENTATIONS)}.")
    u, v = (torch.tensor(axis, dtype=dtype, device=device) for axis in CANONICAL_ORIENTATIONS[orientation])
    return torch.stack([u, v, torch.linalg.cross(u, v)], dim=-1)


def relative(p0: Pose, p1: Pose) -> torch.Tensor:
    """Action (..., 7) taking ``p0`` to ``p1``, expressed in the frame of ``p0``."""
    r0_t = p0.rotation.transpose(-1, -2)
    delta_center = (r0_t @ (p1.center - p0.center)[..., None])[..., 0]
    delta_rotation = matrix_to_axis_angle(r0_t @ p1.rotation)
    delta_log_spacing = torch.log(p1.spacing) - torch.log(p0.spacing)
    return torch.cat([delta_center, delta_rotation, delta_log_spacing[..., None]], dim=-1)


def apply_action(pose: Pose, action: torch.Tensor) -> Pose:
    """Move ``pose`` by an action (..., 7) given in its own frame; broadcasts over leading dims.

    Raises:
        ValueError: when the action does not have 7 values in its last dim.
    """
    if action.shape[-1] != ACTION_DIM:
        raise ValueError(f"An action has {ACTION_DIM} values in its last dim, got shape {tuple(action.shape)}.")
    center = pose.center + (pose.rotation @ action[..., :3, None])[..., 0]
    rotation = pose.rotation @ axis_angle_to_matrix(action[..., 3:6])
    spacing = pose.spacing * torch.exp(action[..., 6])
    return Pose(center, rotation, spacing)


def _identity_like(action: torch.Tensor) -> Pose:
    batch = action.shape[:-1]
    eye = torch.eye(3, dtype=action.dtype, device=action.device).expand(*batch, 3, 3)
    zeros = torch.zeros(*batch, 3, dtype=action.dtype, device=action.device)
    return Pose(zeros, eye, torch.ones(batch, dtype=action.dtype, device=action.device))


def compose_actions(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """The single action equal to applying ``first`` and then ``second`` (each in the frame it starts from)."""
    start = _identity_like(first)
    return relative(start, apply_action(apply_action(start, first), second))


def invert_action(action: torch.Tensor) -> torch.Tensor:
    """The action undoing ``action``: ``compose_actions(a, invert_action(a))`` is zero."""
    start = _identity_like(action)
    return relative(apply_action(start, action), start)


def slice_points(pose: Pose, spatial_size: Sequence[int]) -> torch.Tensor:
    """World coordinates (..., h, w, 3) in mm of the pixel centres of ``h x w`` slices at ``pose``."""
    h, w = as_slice_size(spatial_size)
    dtype, device = pose.center.dtype, pose.center.device
    rows = (torch.arange(h, dtype=dtype, device=device) - (h - 1) / 2)[:, None, None]  # (h, 1, 1)
    cols = (torch.arange(w, dtype=dtype, device=device) - (w - 1) / 2)[None, :, None]  # (1, w, 1)
    step = pose.spacing[..., None, None, None]
    u = step * pose.rotation[..., None, None, :, 0]  # (..., 1, 1, 3)
    v = step * pose.rotation[..., None, None, :, 1]
    return pose.center[..., None, None, :] + cols * u + rows * v


def as_slice_size(spatial_size: Sequence[int] | int) -> tuple[int, int]:
    """Validate a slice size: an int ``n`` means ``(n, n)``; otherwise two positive ints ``(h, w)``.

    Raises:
        ValueError: for anything else.
    """
    if isinstance(spatial_size, int):
        spatial_size = (spatial_size, spatial_size)
    size = tuple(int(s) for s in spatial_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"spatial_size must be two positive ints (h, w), got {spatial_size!r}.")
    return size  # type: ignore[return-value]


def pose_vector(pose: Pose, affine: torch.Tensor, spatial_shape: Sequence[int]) -> torch.Tensor:
    """The absolute pose of slices as a (..., 10) regression target, independent of the volume's size and grid:
    the centre in normalised voxel coordinates (-1 and 1 at the first and last voxel centres of each axis), the
    column direction ``u`` and normal ``n`` in world space, and the log of the pixel spacing over the volume's mean
    voxel size.

    Args:
        pose: slice poses (...).
        affine: the volume's (4, 4) voxel-to-world affine.
        spatial_shape: the volume's (X, Y, Z).
    """
    affine = torch.as_tensor(affine, dtype=pose.center.dtype, device=pose.center.device)
    voxel = torch.linalg.inv(affine) @ torch.cat([pose.center, torch.ones_like(pose.center[..., :1])], -1)[..., None]
    extent = torch.as_tensor(list(spatial_shape), dtype=pose.center.dtype, device=pose.center.device) - 1
    position = 2 * voxel[..., :3, 0] / extent.clamp(min=1) - 1
    mean_voxel = affine_to_spacing(affine, 3, dtype=affine.dtype, suppress_zeros=False).mean()
    log_scale = torch.log(pose.spacing / mean_voxel)
    return torch.cat([position, pose.rotation[..., :, 0], pose.rotation[..., :, 2], log_scale[..., None]], dim=-1)


def gap_matrix(poses: Pose) -> torch.Tensor:
    """All pairwise relative poses of a sequence: poses (..., T) -> (..., T, T, 7) with ``[..., i, j, :]`` the
    action taking slice i to slice j (the "gap" between them; zero on the diagonal)."""
    nb = len(poses.batch_shape)

    def along(dim: int) -> Pose:  # insert a pairing dim into each field (their trailing dims follow the batch)
        return Pose(poses.center.unsqueeze(dim), poses.rotation.unsqueeze(dim), poses.spacing.unsqueeze(dim))

    return relative(along(nb), along(nb - 1))


def quaternion_to_matrix(quaternion: Sequence[float]) -> torch.Tensor:
    """The (3, 3) float64 rotation of a unit quaternion ``(w, x, y, z)``; a uniformly random unit quaternion gives a
    uniformly random rotation."""
    w, x, y, z = (float(v) for v in quaternion)
    return torch.tensor(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ],
        dtype=torch.float64,
    )


def inplane_warp(slices: torch.Tensor, actions: torch.Tensor, spacing: torch.Tensor) -> torch.Tensor:
    """Each slice warped by the in-plane part of the action that leaves it: the next slice's pixel centres,
    expressed in the current slice's frame, are projected onto the current plane and sampled there (bilinear,
    zeros outside). A zero action gives the slice back exactly.

    Args:
        slices: (..., C, h, w) current slices.
        actions: (..., 7) the actions leading from each slice to the next.
        spacing: (...) in-plane pixel size of each current slice in mm (the pose's spacing).
    """
    h, w = slices.shape[-2:]
    batch = slices.shape[:-3]
    dtype, device = slices.dtype, slices.device
    here = Pose(
        torch.zeros(*batch, 3, dtype=dtype, device=device),
        torch.eye(3, dtype=dtype, device=device).expand(*batch, 3, 3),
        spacing.to(dtype),
    )
    points = slice_points(apply_action(here, actions.to(dtype)), (h, w))  # (..., h, w, 3) in the current frame
    scale = spacing.to(dtype)[..., None, None]
    cols = points[..., 0] / scale + (w - 1) / 2
    rows = points[..., 1] / scale + (h - 1) / 2
    grid = torch.stack([2 * cols / max(w - 1, 1) - 1, 2 * rows / max(h - 1, 1) - 1], dim=-1)  # (..., h, w, 2)
    flat = torch.nn.functional.grid_sample(
        slices.reshape(-1, *slices.shape[-3:]), grid.reshape(-1, h, w, 2), align_corners=True, padding_mode="zeros"
    )
    return flat.reshape(slices.shape)
