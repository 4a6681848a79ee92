"""Rendering on the training device: the input chain cuts each trajectory's volume down to the voxels its slices
sample (:class:`CropToSlicesd`), the DataLoader pads the crops of a batch to one shape (:func:`collate_volume_crops`)
and the trainer's ``prepare_batch`` renders them there with one ``grid_sample`` per key
(:class:`~monai_slicenav.workflows.RenderOnDevice`), equal to rendering in the chain (:class:`RenderSlicesd`) within
float tolerance. On a GPU this moves the sampling off the DataLoader workers' CPUs; the crop keeps the transfer to
what the slices touch."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import MetaTensor, list_data_collate
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, ensure_tuple_rep

from ..geometry import Pose, as_slice_size, slice_points
from ..volume import as_volume
from .render import RenderSlicesd

__all__ = ["CropToSlices", "CropToSlicesd", "collate_volume_crops", "slice_renderer"]


class CropToSlices(Transform):
    """Crop a channel-first volume to the voxels that slices of ``spatial_size`` at the given poses sample (the
    trilinear neighbours of every pixel, plus one voxel), with the affine moved accordingly: rendering the crop at
    the same poses gives the same slices as rendering the whole volume (zero padding outside either).

    Args:
        spatial_size: slice size (h, w) in pixels.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, spatial_size: Sequence[int] | int) -> None:
        self.spatial_size = as_slice_size(spatial_size)

    def box(self, img: torch.Tensor, poses: Pose | torch.Tensor, name: str = "image") -> tuple[list[int], list[int]]:
        """The voxel box ``lo`` (inclusive), ``hi`` (exclusive) of ``img`` (C, X, Y, Z) that the slices sample."""
        data, affine = as_volume(img, name, check_values=False)
        poses = poses if isinstance(poses, Pose) else Pose.from_tensor(poses)
        points = slice_points(poses.to(dtype=torch.float64), self.spatial_size).reshape(-1, 3)
        inverse = torch.linalg.inv(affine.double())
        voxels = points @ inverse[:3, :3].T + inverse[:3, 3]
        shape = torch.tensor(data.shape[1:])
        lo = (voxels.min(0).values.floor().long() - 1).clamp(0, None)
        hi = (voxels.max(0).values.floor().long() + 3).clamp(None, shape)
        lo = torch.minimum(lo, shape - 1)  # slices wholly outside the volume still keep one voxel
        hi = torch.maximum(hi, lo + 1)
        return lo.tolist(), hi.tolist()

    def crop(self, img: torch.Tensor, lo: Sequence[int], hi: Sequence[int]) -> MetaTensor:
        """``img`` cut to the box ``lo``:``hi`` as a MetaTensor whose affine keeps every voxel where it was."""
        _, affine = as_volume(img, check_values=False)
        shift = torch.eye(4, dtype=torch.float64)
        shift[:3, 3] = torch.tensor(lo, dtype=torch.float64)
        data = torch.as_tensor(img)[(slice(None), *(slice(a, b) for a, b in zip(lo, hi, strict=True)))]
        return MetaTensor(data.clone(), affine=affine.double() @ shift, meta=_meta_without_affine(img))

    def __call__(self, img: torch.Tensor, poses: Pose | torch.Tensor, name: str = "image") -> MetaTensor:
        return self.crop(img, *self.box(img, poses, name))


class CropToSlicesd(MapTransform):
    """Dictionary wrapper of :class:`CropToSlices`: every key cut to the box of the first key's slices at the poses
    under ``pose_key`` (the volumes of one item share one grid), ready for
    :class:`~monai_slicenav.workflows.RenderOnDevice`.

    Args:
        keys: keys of the volumes to crop, e.g. ``("image", "label")``.
        spatial_size: slice size (h, w) in pixels.
        pose_key: key of the packed (T, 13) poses. Defaults to ``"poses"``.
        allow_missing_keys: skip absent keys instead of raising.
    """

    backend = CropToSlices.backend

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: Sequence[int] | int,
        pose_key: str = "poses",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.cropper = CropToSlices(spatial_size)
        self.pose_key = pose_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        if self.pose_key not in d:
            raise KeyError(f"CropToSlicesd: no poses under {self.pose_key!r}; run RandSliceTrajectoryd first.")
        box = None
        for key in self.key_iterator(d):
            box = box or self.cropper.box(d[key], d[self.pose_key], name=str(key))
            d[key] = self.cropper.crop(d[key], *box)
        return d


def slice_renderer(
    spatial_size: Sequence[int] | int,
    keys: KeysCollection = ("image",),
    mode: Sequence[str] | str = "bilinear",
    on_device: bool = False,
) -> MapTransform:
    """The last spatial step of a slice input chain: :class:`RenderSlicesd` (slices rendered in the chain), or with
    ``on_device`` :class:`CropToSlicesd` (the volume crops go to the trainer, whose
    :class:`~monai_slicenav.workflows.RenderOnDevice` renders them with the same ``mode``)."""
    if on_device:
        return CropToSlicesd(keys, spatial_size)
    return RenderSlicesd(keys, spatial_size, mode=mode)


def collate_volume_crops(batch: Sequence) -> dict:
    """MONAI's ``list_data_collate`` for items whose volumes (4-D MetaTensors) differ in shape: each is padded with
    zeros at its high end to the batch's largest shape first (the affine, anchored at voxel 0, is unchanged, and a
    zero outside the volume is what rendering reads there anyway)."""
    items = [item for entry in batch for item in (entry if isinstance(entry, list) else [entry])]
    for key in items[0] if items else ():
        values = [item[key] for item in items]
        if not all(isinstance(v, MetaTensor) and v.ndim == 4 for v in values):
            continue
        largest = torch.tensor([v.shape[1:] for v in values]).max(0).values.tolist()
        for item, value in zip(items, values, strict=True):
            pad = [
                p
                for size, top in zip(reversed(value.shape[1:]), reversed(largest), strict=True)
                for p in (0, top - size)
            ]
            if any(pad):
                item[key] = MetaTensor(
                    F.pad(value.as_tensor(), pad), affine=value.affine, meta=_meta_without_affine(value)
                )
    return list_data_collate(items)


def _meta_without_affine(img: torch.Tensor) -> dict:
    """``img``'s metadata but its affine (given to the new MetaTensor explicitly)."""
    return {k: v for k, v in img.meta.items() if k != "affine"} if isinstance(img, MetaTensor) else {}


def channel_modes(keys: KeysCollection, mode: Sequence[str] | str) -> list[tuple[str, str]]:
    """``(key, mode)`` pairs, one mode per key or one for all."""
    keys = [keys] if isinstance(keys, str) else list(keys)
    return list(zip(keys, ensure_tuple_rep(mode, len(keys)), strict=True))
