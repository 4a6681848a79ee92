"""Checks and helpers for channel-first 3D volumes and their affines.

A volume is a (C, X, Y, Z) tensor; voxel ``(x, y, z)`` sits at ``affine @ (x, y, z, 1)`` in world millimetres.
A :class:`monai.data.MetaTensor` carries its affine; a plain tensor or array means the identity affine.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.data import MetaTensor
from monai.data.utils import affine_to_spacing

from .geometry import Pose

__all__ = [
    "MIN_VOXEL_MM",
    "INTENSITY_PERCENTILES",
    "checked_percentiles",
    "scale_intensity",
    "STORED_LEVELS",
    "level_boundary",
    "check_scan",
    "centred_affine",
    "as_volume",
    "check_affine",
    "voxel_sizes",
    "foreground_box",
    "voxel_slice_pose",
]

MIN_VOXEL_MM = 1e-3  # voxel sizes below this are a broken header, not a scan

# Smallest |det| of the affine's 3x3 part (mm^3 per voxel) accepted as non-singular.
_MIN_DETERMINANT = 1e-9

# The one intensity rule of the package: real scans and synthetic appearances alike map these percentiles to 0 and 1.
INTENSITY_PERCENTILES = (0.5, 99.5)

# Levels of a [0, 1] image in the compact volume store (uint8; error at most 1 / 510).
STORED_LEVELS = 255


def level_boundary(threshold: float) -> float:
    """``threshold`` in [0, 1] moved to the nearest boundary between two stored intensity levels (at most 1 / 510
    away), so that ``image > threshold`` is reproduced exactly from the stored image and a mask need not be stored."""
    return (float(np.floor(float(threshold) * STORED_LEVELS)) + 0.5) / STORED_LEVELS


def checked_percentiles(percentiles: Sequence[float]) -> tuple[float, float]:
    """``percentiles`` as (lower, upper) floats.

    Raises:
        ValueError: unless 0 <= lower < upper <= 100.
    """
    lower, upper = (float(p) for p in percentiles)
    if not 0 <= lower < upper <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= lower < upper <= 100, got {tuple(percentiles)}.")
    return lower, upper


def scale_intensity(image: torch.Tensor, percentiles: Sequence[float] = INTENSITY_PERCENTILES) -> torch.Tensor:
    """Map the ``percentiles`` (lower, upper) of ``image`` to 0 and 1, clipped: what every volume goes through, real
    or synthetic, so a tokenizer trained on the synthetic engine sees real scans' intensity range. Returns float32;
    the type and the affine of a :class:`~monai.data.MetaTensor` are kept; a constant image becomes zeros.

    Written here rather than with MONAI's ``ScaleIntensityRangePercentiles`` (the same rule, interpolating): that
    sorts the whole volume (``torch.quantile``), while two order statistics (``torch.kthvalue``) are about 5 times
    faster on a 96^3 volume, and the synthetic engine scales every appearance it draws.
    """
    lower, upper = checked_percentiles(percentiles)
    values = torch.as_tensor(image).reshape(-1).float()
    if values.numel() == 0:
        raise ValueError("Cannot scale an empty image.")

    def order_statistic(percent: float) -> torch.Tensor:
        rank = min(values.numel(), max(1, round(percent / 100 * (values.numel() - 1)) + 1))
        return torch.kthvalue(values, rank).values

    low, high = order_statistic(lower), order_statistic(upper)
    scaled = ((image.float() - low) / (high - low).clamp_min(1e-12)).clamp(0.0, 1.0)
    return scaled if float(high) > float(low) else torch.zeros_like(scaled)


def as_volume(
    img: torch.Tensor | np.ndarray, name: str = "image", check_values: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a channel-first 3D volume and return ``(data, affine)``.

    Args:
        img: channel-first (C, X, Y, Z) tensor, MetaTensor or array.
        name: how the volume is named in error messages (a key or file name).
        check_values: check for NaN/Inf (one pass over the data); callers that check values themselves, during
            a pass they make anyway, turn it off.

    Returns:
        the data as a plain tensor (floating point is kept, integers are kept) and its (4, 4) float64 affine.

    Raises:
        TypeError: when ``img`` is not a tensor or array.
        ValueError: when it is not 4-D, is empty, holds NaN/Inf, or its affine is singular.
    """
    if isinstance(img, np.ndarray):
        img = torch.from_numpy(img)
    if not isinstance(img, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, MetaTensor or numpy array, got {type(img).__name__}.")
    if img.ndim != 4:
        raise ValueError(
            f"{name}: expected a channel-first 3D volume (C, X, Y, Z) with 4 dims, got shape {tuple(img.shape)}."
        )
    if img.numel() == 0:
        raise ValueError(f"{name}: the volume is empty (shape {tuple(img.shape)}).")
    affine = img.affine if isinstance(img, MetaTensor) else None
    data = img.as_tensor() if isinstance(img, MetaTensor) else img
    if check_values and not _all_finite(data):
        raise ValueError(f"{name}: the volume holds NaN or Inf values.")
    if affine is None:
        affine = torch.eye(4, dtype=torch.float64)
    return data, check_affine(affine, name)


def _all_finite(data: torch.Tensor) -> bool:
    """True when no value is NaN/Inf. A NaN or Inf makes the sum non-finite, so one reduction decides the common
    case without allocating a full-size mask; only a non-finite sum (overflow or a real NaN) checks elementwise."""
    if not data.is_floating_point():
        return True
    return bool(torch.isfinite(data.sum())) or bool(torch.isfinite(data).all())


def check_affine(affine: torch.Tensor | np.ndarray, name: str = "image") -> torch.Tensor:
    """Return ``affine`` as a (4, 4) float64 tensor after checking that it is finite and invertible.

    Raises:
        ValueError: for a wrong shape, non-finite values, a zero voxel spacing or a singular matrix.
    """
    affine = torch.as_tensor(affine, dtype=torch.float64).cpu()
    matrix = affine.numpy()  # checks of a 4x4 run in numpy: a small torch op costs ~10x more per call
    if matrix.shape != (4, 4):
        raise ValueError(f"{name}: expected a (4, 4) affine, got shape {matrix.shape}.")
    if not np.isfinite(matrix).all():
        raise ValueError(f"{name}: the affine holds NaN or Inf values.")
    spacing = np.linalg.norm(matrix[:3, :3], axis=0)
    if (spacing == 0).any():
        raise ValueError(f"{name}: the affine has a zero voxel spacing {spacing.tolist()} (mm per voxel).")
    if abs(np.linalg.det(matrix[:3, :3])) < _MIN_DETERMINANT:
        raise ValueError(f"{name}: the affine is singular:\n{matrix}")
    return affine


def voxel_sizes(affine: torch.Tensor) -> torch.Tensor:
    """Voxel size (3,) in mm along each array axis: the norms of the affine's first three columns (MONAI's
    ``affine_to_spacing``; a zero column stays 0, for the callers that refuse degenerate affines)."""
    return affine_to_spacing(affine, 3, dtype=affine.dtype, suppress_zeros=False)


def foreground_box(
    data: torch.Tensor, threshold: float = 0.0, name: str = "image"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Voxel bounding box (inclusive ``lo``, ``hi``, each (3,) int64) of voxels above ``threshold`` in any channel.

    Max-projections find it without a full-size mask: one pass over the volume for the (X, Y) profile, then one
    over the X extent of the box for the Z profile. NaN and +Inf propagate through the maxima and are reported here;
    a -Inf voxel cannot move the box (it is below any threshold) and is left to the renderer's check.

    Raises:
        ValueError: when no voxel exceeds ``threshold``, or the volume holds NaN or +Inf.
    """
    peak = data[0] if data.shape[0] == 1 else data.amax(dim=0)  # (X, Y, Z)
    peak_xy = peak.amax(dim=2)  # (X, Y)
    if not bool(torch.isfinite(peak_xy).all()):
        raise ValueError(f"{name}: the volume holds NaN or Inf values.")
    x_lo, x_hi = _profile_extent(peak_xy.amax(dim=1), threshold, name, data)
    y_lo, y_hi = _profile_extent(peak_xy.amax(dim=0), threshold, name, data)
    # reduce the contiguous X slab first (a strided (X, Y) sub-box reduction is ~10x slower on CPU)
    z_profile = peak[x_lo : x_hi + 1].amax(dim=0)[y_lo : y_hi + 1].amax(dim=0)
    z_lo, z_hi = _profile_extent(z_profile, threshold, name, data)
    return torch.tensor([x_lo, y_lo, z_lo]), torch.tensor([x_hi, y_hi, z_hi])


def _profile_extent(profile: torch.Tensor, threshold: float, name: str, data: torch.Tensor) -> tuple[int, int]:
    hits = torch.nonzero(profile > threshold).flatten()
    if hits.numel() == 0:
        raise ValueError(
            f"{name}: empty foreground, no voxel is above the threshold {threshold} "
            f"(value range [{float(data.min())}, {float(data.max())}])."
        )
    return int(hits[0]), int(hits[-1])


def voxel_slice_pose(
    affine: torch.Tensor, spatial_shape: Sequence[int], axis: int, index: int, dtype: torch.dtype = torch.float32
) -> tuple[Pose, tuple[int, int]]:
    """The pose whose pixel grid is exactly voxel plane ``index`` along array ``axis``.

    Rendering it at the returned (h, w) reproduces ``img[:, index]`` (axis 0), ``img[:, :, index]`` (axis 1) or
    ``img[:, :, :, index]`` (axis 2): rows follow the first remaining array axis, columns the second.

    Raises:
        ValueError: when the two in-plane voxel sizes differ or the in-plane axes are not orthogonal (no
            single square pixel spacing can then hit every voxel centre).
    """
    affine = check_affine(affine)
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}.")
    row_axis, col_axis = (a for a in range(3) if a != axis)
    sizes = voxel_sizes(affine)
    row_dir, col_dir = affine[:3, row_axis], affine[:3, col_axis]
    if not torch.isclose(sizes[row_axis], sizes[col_axis], rtol=1e-6):
        raise ValueError(
            f"In-plane voxel sizes differ ({float(sizes[row_axis])} vs {float(sizes[col_axis])} mm): "
            "a square-pixel slice cannot hit every voxel centre."
        )
    if abs(float(row_dir @ col_dir)) > 1e-6 * float(sizes[row_axis]) ** 2:
        raise ValueError("The in-plane voxel axes are not orthogonal in world space.")
    u, v = col_dir / sizes[col_axis], row_dir / sizes[row_axis]
    rotation = torch.stack([u, v, torch.linalg.cross(u, v)], dim=-1)
    centre_voxel = torch.tensor([(n - 1) / 2 for n in spatial_shape], dtype=torch.float64)
    centre_voxel[axis] = index
    center = affine[:3, :3] @ centre_voxel + affine[:3, 3]
    pose = Pose(center.to(dtype), rotation.to(dtype), sizes[row_axis].to(dtype))
    return pose, (int(spatial_shape[row_axis]), int(spatial_shape[col_axis]))


def centred_affine(spatial_size: Sequence[int], spacing: float) -> torch.Tensor:
    """RAS affine (4, 4) of a grid with isotropic ``spacing`` mm whose centre sits at the world origin."""
    affine = torch.diag(torch.tensor([spacing, spacing, spacing, 1.0], dtype=torch.float64))
    affine[:3, 3] = torch.tensor([-spacing * (n - 1) / 2 for n in spatial_size], dtype=torch.float64)
    return affine


def check_scan(volume: torch.Tensor, name: str = "image", label: bool = False) -> torch.Tensor:
    """Refuse, naming ``name``, a loaded scan that would give silently wrong results, and return it unchanged: what
    :func:`as_volume` refuses (wrong dimensionality, empty, NaN/Inf, singular affine), a side under 2 voxels, voxels
    under :data:`MIN_VOXEL_MM`, and a constant image (nothing to learn, register or segment); for a label map
    (``label=True``), values that are not integers (rounding them would merge classes silently).

    Raises:
        ValueError: for each of these, with the offending shape, size or value.
    """
    data, affine = as_volume(volume, name)
    if min(data.shape[1:]) < 2:
        raise ValueError(f"{name}: spatial shape {tuple(data.shape[1:])} has a side under 2 voxels: not a 3D volume.")
    sizes = voxel_sizes(affine)
    if float(sizes.min()) < MIN_VOXEL_MM:
        raise ValueError(f"{name}: voxel sizes {[round(float(v), 9) for v in sizes]} mm: under {MIN_VOXEL_MM} mm.")
    if label:
        fractional = data[data != data.round()] if data.is_floating_point() else data[:0]
        if fractional.numel():
            raise ValueError(f"{name}: label values must be integers, found {float(fractional[0]):g}.")
    elif bool((data == data.reshape(-1)[0]).all()):
        raise ValueError(f"{name}: the image is constant ({float(data.reshape(-1)[0]):g} everywhere): no contrast.")
    return volume
