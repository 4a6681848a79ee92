"""What the tokenizer bundle's workflows add to the shared handlers: reconstruction strips and the token writer."""

from __future__ import annotations

import io

import torch
from ignite.engine import Engine

from ..geometry import Pose
from ..io import atomic_write_files, json_bytes, png_bytes
from ..transforms.navigation import trajectory_to_dict
from .handlers import ItemWriter, StripHandler, unwrap_network

__all__ = ["ReconstructionStripHandler", "reconstruction_strip", "TokenWriter", "appearance_contrast"]


def appearance_contrast(weight: float, data: str | None) -> bool:
    """Whether the tokenizer bundle trains with its appearance-contrastive term (``contrastive_weight`` > 0): two
    random paintings of each synthetic label map, the same trajectories rendered from both.

    Raises:
        ValueError: for a negative or non-finite weight, or a positive one with your own scans (``data``), which
            carry no label maps to paint.
    """
    weight = float(weight)
    if not weight >= 0 or weight == float("inf"):
        raise ValueError(f"contrastive_weight must be a finite number >= 0, got {weight}.")
    if weight > 0 and data:
        raise ValueError(
            f"contrastive_weight {weight} paints two appearances of each synthetic label map, and your own scans "
            f"({data}) have none: set contrastive_weight 0 to pretrain on them, or drop data for the synthetic engine."
        )
    return weight > 0


class ReconstructionStripHandler(StripHandler):
    """Log the first slices of the last batch above their reconstructions (see :class:`StripHandler`)."""

    default_tag = "input_vs_reconstruction"

    def strip(self, engine: Engine) -> torch.Tensor:
        return reconstruction_strip(engine.state.output["image"], engine.state.output["pred"], self.max_slices)


def reconstruction_strip(inputs: torch.Tensor, recon: torch.Tensor, max_slices: int = 8) -> torch.Tensor:
    """A (2 h, n w) image: the first ``n`` slices (first channel) of (N, C, h, w) inputs over their reconstructions,
    clipped to [0, 1]."""
    n = min(max_slices, len(inputs))
    rows = [torch.cat(list(batch[:n, 0].detach().float().cpu()), dim=1) for batch in (inputs, recon)]
    return torch.cat(rows, dim=0).clamp(0.0, 1.0)


class TokenWriter(ItemWriter):
    """Write what the tokenizer makes of each inferred trajectory: ``tokens.pt`` (FSQ indices (N, h / f, w / f) and
    codes (N, d, h / f, w / f), a plain dict of tensors loadable with ``weights_only=True``), ``reconstruction.png``
    (slices above their reconstructions) and ``trajectory.json`` (the poses and actions), one folder per item
    (``<out_dir>/<name>``), all written atomically; arguments as :class:`ItemWriter`.
    """

    def __call__(self, engine: Engine) -> None:
        tokenizer = unwrap_network(engine.network)
        slices, recon = engine.state.output["image"], engine.state.output["pred"]
        with torch.no_grad():
            codes = tokenizer.encode(slices).cpu()
        indices = tokenizer.quantizer.codes_to_indices(codes) if tokenizer.config.quantizer == "fsq" else None
        batch = engine.state.batch
        target = self.item_dir(engine)
        payload = io.BytesIO()
        torch.save({"codes": codes, **({"indices": indices} if indices is not None else {})}, payload)
        record = trajectory_to_dict(Pose.from_tensor(batch["poses"][0]), batch["actions"][0], slices.shape[-2:])
        atomic_write_files(
            {
                target / "tokens.pt": payload.getvalue(),
                target / "reconstruction.png": png_bytes(reconstruction_strip(slices, recon, self.max_slices)),
                target / "trajectory.json": json_bytes(record),
            }
        )
