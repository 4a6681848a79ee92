"""A built-in example volume: a 3D Shepp-Logan-style head phantom (ellipsoids), generated, never downloaded.

Reference: L. A. Shepp and B. F. Logan, "The Fourier reconstruction of a head section", IEEE TNS 21(3), 1974,
with the 3D ellipsoid extension of Kak and Slaney, "Principles of Computerized Tomographic Imaging", 1988, and
the higher-contrast intensities of Toft's modified phantom.
"""

from __future__ import annotations

import math

import torch
from monai.data import MetaTensor

from ..volume import centred_affine

__all__ = ["shepp_logan_volume"]

# intensity, semi-axes (a, b, c), centre (x, y, z), in-plane rotation (degrees); in the phantom's [-1, 1]^3 box.
_ELLIPSOIDS = (
    (1.0, (0.69, 0.92, 0.81), (0.0, 0.0, 0.0), 0.0),
    (-0.8, (0.6624, 0.874, 0.78), (0.0, -0.0184, 0.0), 0.0),
    (-0.2, (0.11, 0.31, 0.22), (0.22, 0.0, 0.0), -18.0),
    (-0.2, (0.16, 0.41, 0.28), (-0.22, 0.0, 0.0), 18.0),
    (0.1, (0.21, 0.25, 0.41), (0.0, 0.35, -0.15), 0.0),
    (0.1, (0.046, 0.046, 0.05), (0.0, 0.1, 0.25), 0.0),
    (0.1, (0.046, 0.046, 0.05), (0.0, -0.1, 0.25), 0.0),
    (0.1, (0.046, 0.023, 0.05), (-0.08, -0.605, 0.0), 0.0),
    (0.1, (0.023, 0.023, 0.02), (0.0, -0.606, 0.0), 0.0),
    (0.1, (0.023, 0.046, 0.02), (0.06, -0.605, 0.0), 0.0),
)


def shepp_logan_volume(size: int = 128, field_of_view: float = 200.0) -> MetaTensor:
    """A (1, size, size, size) float32 phantom in [0, 1] with a RAS affine centred on the world origin.

    Args:
        size: voxels per axis.
        field_of_view: edge of the cube in mm; the voxel size is ``field_of_view / size``.

    Raises:
        ValueError: when ``size`` < 2 or ``field_of_view`` <= 0.
    """
    if size < 2 or field_of_view <= 0:
        raise ValueError(f"size must be >= 2 and field_of_view > 0, got {size} and {field_of_view}.")
    coords = (torch.arange(size, dtype=torch.float32) - (size - 1) / 2) * (2.0 / size)
    x, y, z = torch.meshgrid(coords, coords, coords, indexing="ij")
    volume = torch.zeros(size, size, size)
    for intensity, (a, b, c), (x0, y0, z0), angle in _ELLIPSOIDS:
        cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        xr = cos * (x - x0) + sin * (y - y0)
        yr = -sin * (x - x0) + cos * (y - y0)
        inside = (xr / a) ** 2 + (yr / b) ** 2 + ((z - z0) / c) ** 2 <= 1.0
        volume += intensity * inside
    spacing = field_of_view / size
    affine = centred_affine((size, size, size), spacing)
    volume = volume.clamp(0.0, 1.0)[None]
    return MetaTensor(volume, affine=affine, meta={"filename_or_obj": "shepp_logan_phantom"})
