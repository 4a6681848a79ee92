"""What the voxel-contrastive bundle's inference adds: a picture and a file of an image's voxel features."""

from __future__ import annotations

import io

import torch
from ignite.engine import Engine
from monai.data import MetaTensor

from ..io import atomic_write_files, png_bytes
from .handlers import ItemWriter

__all__ = ["feature_colours", "VoxelFeatureWriter"]


def feature_colours(features: torch.Tensor) -> torch.Tensor:
    r"""(C, \*S) features -> (3, \*S) colours in [0, 1]: their first three principal components over the voxels, each
    scaled by its 1st-99th percentile range (a voxel's colour says which anatomy its features describe)."""
    flat = features.flatten(1).T.float()  # (N, C)
    centred = flat - flat.mean(dim=0)
    _, _, basis = torch.pca_lowrank(centred, q=min(3, flat.shape[1]), center=False)
    components = (centred @ basis).T  # (q, N)
    low, high = (
        torch.quantile(components, 0.01, dim=1, keepdim=True),
        torch.quantile(components, 0.99, dim=1, keepdim=True),
    )
    colours = ((components - low) / (high - low).clamp_min(1e-6)).clamp(0.0, 1.0)
    colours = torch.cat([colours, colours[:1].expand(3 - len(colours), -1)]) if len(colours) < 3 else colours
    return colours.reshape(3, *features.shape[1:])


class VoxelFeatureWriter(ItemWriter):
    """Write, for each inferred volume, ``features.png`` (middle axial slice: the image beside the colours of its
    finest-level features, :func:`feature_colours`) and ``features.pt`` (those features, a plain tensor file that
    loads with ``weights_only=True``) under ``<out_dir>/<name>``, atomically; arguments as
    :class:`~monai_slicenav.workflows.ItemWriter`."""

    def __call__(self, engine: Engine) -> None:
        image, features = engine.state.batch["image"][0], engine.state.output["pred"][0].detach().cpu()
        if isinstance(features, MetaTensor):  # a plain tensor: the file must load with weights_only=True
            features = features.as_tensor()
        middle = image.shape[-1] // 2
        stride = image.shape[-1] // features.shape[-1]
        colours = feature_colours(features)[..., middle // stride]  # (3, X', Y'): the slice holding the middle one
        up = torch.nn.functional.interpolate(colours[None], size=image.shape[1:3], mode="nearest")[0]
        grey = image[0, :, :, middle].float().clamp(0.0, 1.0)
        picture = torch.cat([grey[..., None].expand(-1, -1, 3), up.permute(1, 2, 0)], dim=1)
        buffer = io.BytesIO()
        torch.save({"features": features.half(), "stride": stride}, buffer)
        item = self.item_dir(engine)
        atomic_write_files({item / "features.png": png_bytes(picture.numpy()), item / "features.pt": buffer.getvalue()})
