"""Targets of the pose pretext tasks, computed from a trajectory's poses and its volume's geometry."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends

from ..geometry import Pose, pose_vector
from ..volume import as_volume

__all__ = ["SlicePoseVectors", "SlicePoseVectorsd", "SlicePoseVectorsD", "SlicePoseVectorsDict"]


class SlicePoseVectors(Transform):
    """``(volume, poses) -> (T, 10)`` pose vectors of the slices (see :func:`~monai_slicenav.geometry.pose_vector`):
    position in normalised voxel coordinates of ``volume``, column direction, normal, log-scale.

    Raises:
        ValueError/TypeError: for a volume :func:`~monai_slicenav.volume.as_volume` rejects.
    """

    backend = [TransformBackends.TORCH]

    def __call__(self, img: torch.Tensor, poses: Pose, name: str = "image") -> torch.Tensor:
        volume, affine = as_volume(img, name, check_values=False)
        return pose_vector(poses, affine.to(poses.center.dtype), volume.shape[1:])


class SlicePoseVectorsd(MapTransform):
    """Dictionary wrapper of :class:`SlicePoseVectors`: reads the volume under the single key in ``keys`` and the
    packed poses under ``pose_key``, writes (T, 10) vectors under ``output_key``. Place it before
    :class:`RenderSlicesd` replaces the volume by its slices.
    """

    backend = SlicePoseVectors.backend

    def __init__(
        self,
        keys: KeysCollection,
        pose_key: str = "poses",
        output_key: str = "pose_vectors",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"SlicePoseVectorsd takes exactly one reference key, got {self.keys}.")
        self.pose_key, self.output_key = pose_key, output_key
        self.vectors = SlicePoseVectors()

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        if self.pose_key not in d:
            raise KeyError(f"SlicePoseVectorsd: no poses under {self.pose_key!r}; run RandSliceTrajectoryd first.")
        for key in self.key_iterator(d):
            d[self.output_key] = self.vectors(d[key], Pose.from_tensor(d[self.pose_key]), name=str(key))
        return d


SlicePoseVectorsD = SlicePoseVectorsDict = SlicePoseVectorsd
