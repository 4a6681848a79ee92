"""What the tokenizer bundle's ignite workflows call: batch preparation and the encoder export at the end."""

from __future__ import annotations

import io
import json
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.engines.utils import PrepareBatch
from PIL import Image
from torch import nn

from ..encoders import encoders_of
from ..export import export_encoder
from ..geometry import Pose
from ..io import atomic_write_files
from ..navigation import trajectory_to_dict
from .distributed import is_main_process

__all__ = [
    "ItemWriter",
    "TokenWriter",
    "latest_checkpoint",
    "ReseedHandler",
    "PrepareSlices",
    "unwrap_network",
    "ExportEncoderHandler",
    "ReconstructionStripHandler",
    "StripHandler",
    "reconstruction_strip",
]

logger = logging.getLogger(__name__)


class PrepareSlices(PrepareBatch):
    """``prepare_batch`` of the tokenizer's trainer and evaluator: rendered slice stacks (B, T, C, h, w) under
    ``image_key`` become one batch of slices (B * T, C, h, w), which is both the input and the target, so MONAI's
    own ``SupervisedTrainer`` iteration (AMP, gradient accumulation, events) trains the autoencoder.

    Raises:
        KeyError: when the batch has no ``image_key``.
        ValueError: when the stacks are not 5-D.
    """

    def __init__(self, image_key: str = "image") -> None:
        self.image_key = image_key

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.image_key not in batchdata:
            raise KeyError(f"PrepareSlices: the batch has no {self.image_key!r} (keys: {list(batchdata)}).")
        stacks = torch.as_tensor(batchdata[self.image_key])
        if stacks.ndim != 5:
            raise ValueError(f"Expected slice stacks (B, T, C, h, w), got shape {tuple(stacks.shape)}.")
        slices = stacks.flatten(0, 1).to(device=device, non_blocking=non_blocking, **kwargs)  # (B * T, C, h, w)
        return slices, slices


def latest_checkpoint(ckpt_dir: str | os.PathLike, pattern: str = "checkpoint_epoch=*.pt") -> str:
    """The most recent training checkpoint in ``ckpt_dir`` (by the epoch in its name), for resuming.

    Raises:
        FileNotFoundError: when there is none.
    """
    candidates = list(Path(ckpt_dir).glob(pattern))
    if not candidates:
        raise FileNotFoundError(f"{ckpt_dir}: no checkpoint matching {pattern!r} to resume from.")
    return str(max(candidates, key=lambda p: int("".join(ch for ch in p.stem.split("=")[-1] if ch.isdigit()) or 0)))


class ReseedHandler:
    """Reseed a transform from the run's seed, so that random trajectories and appearances depend on the seed (and
    the epoch) alone, not on what ran before.

    * ``per_epoch=False``: at every engine start (a validation run sees the same data each time, so its metrics
      compare across epochs);
    * ``per_epoch=True``: at every epoch start with ``seed + epoch`` (a resumed training run sees the same data as an
      uninterrupted one; exact with ``num_workers=0``, as workers reseed themselves).

    Args:
        transform: a ``Randomizable`` (e.g. a ``Compose``).
        seed: the base seed.
        per_epoch: reseed at each epoch instead of each run.
    """

    def __init__(self, transform: Any, seed: int = 0, per_epoch: bool = False) -> None:
        self.transform = transform
        self.seed = int(seed)
        self.per_epoch = per_epoch

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED if self.per_epoch else Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        self.transform.set_random_state(seed=self.seed + (engine.state.epoch if self.per_epoch else 0))


def unwrap_network(network: nn.Module) -> nn.Module:
    """The bare model inside ``DistributedDataParallel``/``DataParallel`` and ``torch.compile`` wrappers."""
    while True:
        if isinstance(network, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            network = network.module
        elif hasattr(network, "_orig_mod"):
            network = network._orig_mod
        else:
            return network


class ExportEncoderHandler:
    """Export the trained network's encoders (``encoder.pt`` + ``encoder.json`` each) when the engine completes.

    Which encoders a network has comes from :func:`~monai_slicenav.encoders.encoders_of`: ``encoder`` for every
    pretraining network, plus ``context_encoder`` for the dynamics stage. Only rank 0 writes. Each export holds the
    input specification and the provenance (including the iterations trained), so a model zoo user knows what the
    encoder expects and where it comes from.

    Args:
        out_dir: destination folder of ``encoder``, or a mapping from export names to folders (names left out are
            not exported).
        input_spec: normalisation, slice size and spacing the encoder was trained with.
        provenance: bundle name, version, data, ...; ``iterations`` and ``epochs`` are added.
        navigation: the trajectory regime trained on (``RandSliceTrajectory``'s keyword arguments), recorded under
            ``"navigation"`` in every ``encoder.json``.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike | Mapping[str, str | os.PathLike],
        input_spec: Mapping | None = None,
        provenance: Mapping | None = None,
        navigation: Mapping | None = None,
    ) -> None:
        targets = out_dir if isinstance(out_dir, Mapping) else {"encoder": out_dir}
        self.out_dirs = {name: Path(path) for name, path in targets.items()}
        self.input_spec = dict(input_spec or {})
        self.provenance = dict(provenance or {})
        self.navigation = None if navigation is None else dict(navigation)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if not is_main_process():
            return
        provenance = {**self.provenance, "iterations": engine.state.iteration, "epochs": engine.state.epoch}
        for name, encoder in encoders_of(unwrap_network(engine.network)).items():
            if name in self.out_dirs:
                paths = export_encoder(encoder, self.out_dirs[name], self.input_spec, provenance, self.navigation)
                logger.info("exported the %s to %s", name, ", ".join(str(p) for p in paths))


class StripHandler(ABC):
    """Log an image strip made from the engine's last output to TensorBoard when an epoch completes. MONAI's
    ``TensorBoardImageHandler`` shows one image per call; a strip shows a whole trajectory at a glance. Subclasses
    say what the strip is (:meth:`strip`).

    Args:
        summary_writer: a ``torch.utils.tensorboard.SummaryWriter``; ``log_dir`` makes one when omitted.
        log_dir: TensorBoard folder when no writer is given.
        max_slices: slices per strip.
        tag: the image's tag.
        global_step_transform: engine -> step shown in TensorBoard; defaults to the engine's epoch.
    """

    default_tag = "strip"

    def __init__(
        self,
        summary_writer: Any = None,
        log_dir: str = "./runs",
        max_slices: int = 8,
        tag: str | None = None,
        global_step_transform: Any = None,
    ) -> None:
        if summary_writer is None:
            from torch.utils.tensorboard import SummaryWriter

            summary_writer = SummaryWriter(log_dir=log_dir)
        self.writer = summary_writer
        self.max_slices = max_slices
        self.tag = tag or self.default_tag
        self.global_step_transform = global_step_transform or (lambda engine: engine.state.epoch)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    @abstractmethod
    def strip(self, engine: Engine) -> torch.Tensor:
        """The (H, W) image to log."""

    def __call__(self, engine: Engine) -> None:
        self.writer.add_image(self.tag, self.strip(engine), self.global_step_transform(engine), dataformats="HW")
        self.writer.flush()


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


class ItemWriter:
    """Write files for every inferred item when an iteration completes (one folder per item under ``out_dir``);
    subclasses say what they write (``__call__``).

    Args:
        out_dir: destination folder.
        max_slices: slices shown in pictures.
    """

    def __init__(self, out_dir: str | os.PathLike, max_slices: int = 16) -> None:
        self.out_dir = Path(out_dir)
        self.max_slices = max_slices

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)


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
        names = batch.get("name", [f"item_{engine.state.iteration:04d}"])
        target = self.out_dir / str(names[0])
        payload = io.BytesIO()
        torch.save({"codes": codes, **({"indices": indices} if indices is not None else {})}, payload)
        strip = (reconstruction_strip(slices, recon, self.max_slices).numpy() * 255).round().astype("uint8")
        picture = io.BytesIO()
        Image.fromarray(strip).save(picture, format="PNG")
        record = trajectory_to_dict(Pose.from_tensor(batch["poses"][0]), batch["actions"][0], slices.shape[-2:])
        atomic_write_files(
            {
                target / "tokens.pt": payload.getvalue(),
                target / "reconstruction.png": picture.getvalue(),
                target / "trajectory.json": (json.dumps(record, indent=2) + "\n").encode(),
            }
        )
