"""What the static-volume baseline bundle's ignite workflows call: masked batches and the reconstruction writer."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.engines.utils import PrepareBatch
from PIL import Image

from ..io import atomic_write_files
from ..networks.volume_mae import mask_volumes

__all__ = ["PrepareMaskedVolumes", "VolumeReconstructionWriter", "masked_strip"]


class PrepareMaskedVolumes(PrepareBatch):
    """``prepare_batch`` of the masked autoencoder: crops (B, C, D, H, W) under ``image_key`` become the masked
    crops (inputs) and the crops with the mask as an extra last channel (targets, as
    :class:`~monai_slicenav.networks.MaskedReconstructionLoss` reads them).

    Args:
        image_key: key of the crops.
        ratio: fraction of ``patch^3`` cubes hidden.
        patch: cube side in voxels.
        seed: None draws masks from torch's global generator (training, seeded by ``set_determinism``); an int
            draws every batch's masks from a generator seeded with it (the same masks at every validation).

    Raises:
        KeyError: when the batch lacks ``image_key``.
    """

    def __init__(self, image_key: str = "image", ratio: float = 0.6, patch: int = 8, seed: int | None = None) -> None:
        self.image_key, self.ratio, self.patch, self.seed = image_key, ratio, patch, seed

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.image_key not in batchdata:
            raise KeyError(f"PrepareMaskedVolumes: the batch has no {self.image_key!r} (keys: {list(batchdata)}).")
        volumes = torch.as_tensor(batchdata[self.image_key]).to(device=device, non_blocking=non_blocking, **kwargs)
        generator = torch.Generator().manual_seed(self.seed) if self.seed is not None else None
        masked, mask = mask_volumes(volumes, self.ratio, self.patch, generator)
        return masked, torch.cat([volumes, mask], dim=1)


def masked_strip(target: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """A (3 H, W) image of the middle depth slice of one crop: original, masked input, reconstruction; clipped to
    [0, 1]. ``target`` is (C + 1, D, H, W) with the mask last, ``recon`` (C, D, H, W)."""
    middle = target.shape[1] // 2
    original, mask = target[0, middle], target[-1, middle]
    rows = [original, original * (1 - mask), recon[0, middle]]
    return torch.cat([row.detach().float().cpu() for row in rows], dim=0).clamp(0.0, 1.0)


class VolumeReconstructionWriter:
    """Write, for each inferred volume, ``reconstruction.png`` (:func:`masked_strip`) and ``reconstruction.json``
    (mean absolute error on hidden and on visible voxels) under ``<out_dir>/<name>``, atomically."""

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.out_dir = Path(out_dir)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        target, recon = engine.state.output["label"][0], engine.state.output["pred"][0]
        mask = target[-1:]
        error = (recon - target[:-1]).abs()
        scores = {
            "hidden_mae": float((error * mask).sum() / mask.sum().clamp(min=1)),
            "visible_mae": float((error * (1 - mask)).sum() / (1 - mask).sum().clamp(min=1)),
            "hidden_fraction": float(mask.mean()),
        }
        picture = io.BytesIO()
        strip = (masked_strip(target, recon).numpy() * 255).round().astype("uint8")
        Image.fromarray(strip).save(picture, format="PNG")
        name = str(engine.state.batch.get("name", [f"item_{engine.state.iteration:04d}"])[0])
        atomic_write_files(
            {
                self.out_dir / name / "reconstruction.png": picture.getvalue(),
                self.out_dir / name / "reconstruction.json": (json.dumps(scores, indent=2) + "\n").encode(),
            }
        )
