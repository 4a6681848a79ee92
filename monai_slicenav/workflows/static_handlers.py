"""What the static-volume baseline bundle's workflows add: the masked-reconstruction strip and writer."""

from __future__ import annotations

import torch
from ignite.engine import Engine

from ..io import atomic_write_files, json_bytes, png_bytes
from .handlers import ItemWriter

__all__ = ["VolumeReconstructionWriter", "masked_strip"]


def masked_strip(target: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """A (3 H, W) image of the middle depth slice of one crop: original, masked input, reconstruction; clipped to
    [0, 1]. ``target`` is (C + 1, D, H, W) with the mask last, ``recon`` (C, D, H, W)."""
    middle = target.shape[1] // 2
    original, mask = target[0, middle], target[-1, middle]
    rows = [original, original * (1 - mask), recon[0, middle]]
    return torch.cat([row.detach().float().cpu() for row in rows], dim=0).clamp(0.0, 1.0)


class VolumeReconstructionWriter(ItemWriter):
    """Write, for each inferred volume, ``reconstruction.png`` (:func:`masked_strip`) and ``reconstruction.json``
    (mean absolute error on hidden and on visible voxels) under ``<out_dir>/<name>``, atomically; arguments as
    :class:`~monai_slicenav.workflows.ItemWriter` (``max_slices`` unused: the strip shows the middle slice)."""

    def __call__(self, engine: Engine) -> None:
        target, recon = engine.state.output["label"][0], engine.state.output["pred"][0]
        mask = target[-1:]
        error = (recon - target[:-1]).abs()
        scores = {
            "hidden_mae": float((error * mask).sum() / mask.sum().clamp(min=1)),
            "visible_mae": float((error * (1 - mask)).sum() / (1 - mask).sum().clamp(min=1)),
            "hidden_fraction": float(mask.mean()),
        }
        item = self.item_dir(engine)
        atomic_write_files(
            {
                item / "reconstruction.png": png_bytes(masked_strip(target, recon)),
                item / "reconstruction.json": json_bytes(scores),
            }
        )
