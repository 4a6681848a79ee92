"""Feature-based deformable registration by instance optimisation, with an intensity baseline.

A stationary velocity field is optimised coarse to fine; each level integrates it with MONAI's ``DVF2DDF``
(scaling and squaring, so the displacement stays smooth and mostly invertible), warps the moving level with MONAI's
``Warp``, and minimises a similarity plus ``smooth_weight`` times MONAI's ``BendingEnergyLoss``:

* ``features``: the levels of an encoder's 3D pyramid (:class:`~.lift3d.Lift3D`, coarsest first), L2
  normalised per voxel; similarity 1 - cosine;
* ``intensity``: the images average-pooled to the same strides; similarity MONAI's
  ``LocalNormalizedCrossCorrelationLoss``.

Displacements are in voxels of the fixed grid (MONAI's ``Warp`` convention); :func:`negative_jacobian_fraction`
measures folding.
"""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.losses import BendingEnergyLoss, GlobalMutualInformationLoss, LocalNormalizedCrossCorrelationLoss
from monai.metrics import DiceMetric
from monai.networks.blocks import DVF2DDF, Warp
from monai.networks.utils import one_hot
from torch import nn

from ..io import atomic_write_files, json_bytes
from .lift3d import CONTEXT_MODES

__all__ = [
    "RegistrationConfig",
    "feature_levels",
    "intensity_levels",
    "FEATURE_SIMILARITIES",
    "SIMILARITIES",
    "register",
    "warp_volume",
    "negative_jacobian_fraction",
    "label_dice",
    "write_registration",
]


SIMILARITIES = ("features", "intensity", "mutual_information", "combined")
FEATURE_SIMILARITIES = ("features", "combined")  # the similarities that use an encoder's features


@dataclass
class RegistrationConfig:
    """Optimisation settings (stored with the outputs)."""

    iterations: tuple[int, ...] = (60, 40, 20)  # per level, coarsest first
    learning_rate: float = 0.1
    smooth_weight: float = 1.0  # BendingEnergyLoss weight
    integration_steps: int = 7  # DVF2DDF scaling-and-squaring steps
    intensity_weight: float = 1.0  # weight of the intensity LNCC next to the feature term (similarity "combined")
    context: str = "none"  # how a context encoder sees the slices of a volume (Lift3D's context; feature similarities)
    context_stride: int = 1  # with a context: slices that many voxels apart form its trajectories (Lift3D's)

    def __post_init__(self) -> None:
        self.iterations = tuple(int(i) for i in self.iterations)
        if self.context not in CONTEXT_MODES:
            raise ValueError(f"context must be one of {CONTEXT_MODES}, got {self.context!r}.")
        if (
            not self.iterations
            or min(self.iterations) < 0
            or self.learning_rate <= 0
            or self.smooth_weight < 0
            or self.intensity_weight < 0
            or int(self.context_stride) < 1
        ):
            raise ValueError(
                f"non-empty non-negative iterations, learning_rate > 0, smooth_weight and intensity_weight >= 0, "
                f"context_stride >= 1; got {self}."
            )


@torch.no_grad()
def feature_levels(
    encoder: nn.Module, volume: torch.Tensor, levels: int = 3, foreground: float | None = 0.05
) -> list[torch.Tensor]:
    """The ``levels`` finest 3D pyramid levels of ``encoder`` (a :class:`~.lift3d.Lift3D`) for a
    volume (1, C, X, Y, Z), coarsest first, L2-normalised over channels. With ``foreground``, features are zeroed
    where the pooled intensity is at or below it, so empty background (where conv features are arbitrary) does not
    pull the deformation."""
    pyramid = encoder(volume)[:levels]
    normalised = [nn.functional.normalize(level, dim=1) for level in reversed(pyramid)]
    if foreground is None:
        return normalised
    masks = [(level > foreground).float() for level in intensity_levels(volume, len(normalised))]
    return [f * m for f, m in zip(normalised, masks, strict=True)]


def intensity_levels(volume: torch.Tensor, levels: int = 3) -> list[torch.Tensor]:
    """The volume average-pooled to strides 2, 4, ... (ceil sizes, as the encoder pyramids), coarsest first."""
    return [
        nn.functional.avg_pool3d(volume, 2 ** (k + 1), ceil_mode=True, count_include_pad=False)
        for k in reversed(range(levels))
    ]


def _cosine_distance(warped: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
    return 1.0 - (warped * fixed).sum(dim=1).mean()


def _resize_ddf(ddf: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Resample a displacement field to another grid of the same extent, rescaling its voxel units per axis."""
    scale = torch.tensor([t / s for t, s in zip(shape, ddf.shape[2:], strict=True)], dtype=ddf.dtype)
    resized = nn.functional.interpolate(ddf, size=tuple(shape), mode="trilinear", align_corners=False)
    return resized * scale.to(ddf.device).view(1, 3, 1, 1, 1)


def register(
    fixed_levels: Sequence[torch.Tensor],
    moving_levels: Sequence[torch.Tensor],
    shape: Sequence[int],
    similarity: str = "features",
    config: RegistrationConfig | None = None,
    fixed_intensity: Sequence[torch.Tensor] | None = None,
    moving_intensity: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Optimise a displacement field taking ``moving`` onto ``fixed``.

    Args:
        fixed_levels / moving_levels: matching pyramids (1, C, ...) of the two volumes, coarsest first
            (:func:`feature_levels` or :func:`intensity_levels`), on grids of the same extent as ``shape``.
        shape: the full-resolution fixed grid (X, Y, Z) of the returned field.
        similarity: ``"features"`` (1 - cosine of normalised features), ``"intensity"`` (LNCC),
            ``"mutual_information"`` (MONAI's global mutual information, for pairs of different contrasts), or
            ``"combined"``
            (the feature term plus ``config.intensity_weight`` times LNCC of ``fixed_intensity`` /
            ``moving_intensity``, the :func:`intensity_levels` of the two volumes).
        config: optimisation settings.

    Returns:
        the displacement field (1, 3, X, Y, Z) in voxels of the fixed grid.

    Raises:
        ValueError: for an unknown similarity or pyramids that do not match.
    """
    config = config or RegistrationConfig()
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}.")
    pyramids = [(fixed_levels, moving_levels)]
    if similarity == "combined":
        if fixed_intensity is None or moving_intensity is None:
            raise ValueError("similarity 'combined' needs the intensity pyramids of both volumes too.")
        pyramids.append((fixed_intensity, moving_intensity))
    for fixed_pyramid, moving_pyramid in pyramids:
        if (
            len(fixed_pyramid) != len(fixed_levels)
            or len(moving_pyramid) != len(fixed_levels)
            or any(
                f.shape != m.shape or f.shape[2:] != g.shape[2:]
                for f, m, g in zip(fixed_pyramid, moving_pyramid, fixed_levels, strict=False)
            )
        ):
            raise ValueError("fixed and moving pyramids must have the same levels and shapes.")
    lncc = LocalNormalizedCrossCorrelationLoss(kernel_size=5)
    mutual_information = GlobalMutualInformationLoss(num_bins=32)

    def loss_fn(warp_by, level: int) -> torch.Tensor:
        if similarity == "intensity":
            return lncc(warp_by(moving_levels[level]), fixed_levels[level])
        if similarity == "mutual_information":
            return mutual_information(warp_by(moving_levels[level]), fixed_levels[level])
        value = _cosine_distance(warp_by(moving_levels[level]), fixed_levels[level])
        if similarity == "combined":
            value = value + config.intensity_weight * lncc(warp_by(moving_intensity[level]), fixed_intensity[level])
        return value

    smooth, integrate, warp = BendingEnergyLoss(), DVF2DDF(num_steps=config.integration_steps), Warp()
    iterations = list(config.iterations) + [config.iterations[-1]] * (len(fixed_levels) - len(config.iterations))
    velocity = torch.zeros(1, 3, *fixed_levels[0].shape[2:], device=fixed_levels[0].device)
    for level, (fixed, steps) in enumerate(zip(fixed_levels, iterations, strict=False)):
        velocity = nn.Parameter(_resize_ddf(velocity.detach(), fixed.shape[2:]))
        optimizer = torch.optim.Adam([velocity], lr=config.learning_rate)
        for _ in range(steps):
            ddf = integrate(velocity)
            loss = loss_fn(lambda moving, field=ddf: warp(moving, field), level) + config.smooth_weight * smooth(ddf)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return _resize_ddf(integrate(velocity), shape)


def warp_volume(volume: torch.Tensor, ddf: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Warp (1, C, X, Y, Z) by a displacement field; ``mode="nearest"`` for label maps."""
    with torch.no_grad():
        warped = Warp(mode=mode, padding_mode="border")(volume.float(), ddf)
    return warped.round().to(volume.dtype) if mode == "nearest" else warped


def negative_jacobian_fraction(ddf: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """The fraction of voxels (inside ``mask`` when given) where the map x -> x + ddf(x) folds (Jacobian
    determinant <= 0), from central differences of a (1, 3, X, Y, Z) field in voxels."""
    grads = torch.gradient(ddf[0], dim=(1, 2, 3))  # d(ddf)/dx, /dy, /dz, each (3, X, Y, Z)
    jacobian = torch.stack(grads, dim=1) + torch.eye(3, dtype=ddf.dtype, device=ddf.device)[:, :, None, None, None]
    det = torch.linalg.det(jacobian.permute(2, 3, 4, 0, 1))
    folded = det <= 0
    if mask is not None:
        return float(folded[mask[0, 0].bool()].float().mean())
    return float(folded.float().mean())


def label_dice(warped: torch.Tensor, fixed: torch.Tensor, num_classes: int) -> list[float]:
    """Per-class Dice (foreground classes 1 .. num_classes - 1) of two label maps (1, 1, X, Y, Z)."""
    metric = DiceMetric(include_background=False, ignore_empty=False)
    scores = metric(one_hot(warped.long(), num_classes), one_hot(fixed.long(), num_classes))
    return [float(s) for s in scores[0]]


def write_registration(
    out_dir: str | os.PathLike,
    affine: np.ndarray,
    warped_image: torch.Tensor,
    warped_label: torch.Tensor | None,
    ddf: torch.Tensor,
    record: Mapping,
) -> list[Path]:
    """Write ``warped_image.nii.gz``, ``warped_label.nii.gz``, ``ddf.nii.gz`` (X, Y, Z, 1, 3 in voxels of the fixed
    grid, NIfTI vector intent) with the fixed image's ``affine``, and ``registration.json``, all atomically."""

    def nifti(array: np.ndarray, intent: str | None = None) -> bytes:
        image = nib.Nifti1Image(array, affine)
        if intent:
            image.header.set_intent(intent)
        return image.to_bytes()

    out = Path(out_dir)
    files = {
        out / "warped_image.nii.gz": _gz(nifti(warped_image[0, 0].cpu().numpy().astype(np.float32))),
        out / "ddf.nii.gz": _gz(nifti(ddf[0].permute(1, 2, 3, 0)[:, :, :, None, :].cpu().numpy(), "vector")),
        out / "registration.json": json_bytes(dict(record)),
    }
    if warped_label is not None:
        files[out / "warped_label.nii.gz"] = _gz(nifti(warped_label[0, 0].cpu().numpy().astype(np.int16)))
    return atomic_write_files(files)


def _gz(data: bytes) -> bytes:
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as f:
        f.write(data)
    return buffer.getvalue()
