"""Handlers every pretraining workflow shares: per-epoch reseeding, resuming, the encoder export at the end,
TensorBoard strips and per-item writers (subclassed by each stage)."""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from torch import nn

from ..encoders import copy_export, encoders_of, export_encoder
from ..io import atomic_write_json
from .distributed import is_main_process

__all__ = [
    "TrainingRecordHandler",
    "PruneCheckpointsHandler",
    "latest_checkpoint",
    "ReseedHandler",
    "unwrap_network",
    "ExportEncoderHandler",
    "StripHandler",
    "ItemWriter",
    "HandlerGroup",
]

logger = logging.getLogger(__name__)


def latest_checkpoint(ckpt_dir: str | os.PathLike, pattern: str = "checkpoint_epoch=*.pt") -> str:
    """The most recent training checkpoint in ``ckpt_dir`` (by the epoch in its name), for resuming.

    Raises:
        FileNotFoundError: when there is none.
    """
    candidates = list(Path(ckpt_dir).glob(pattern))
    if not candidates:
        raise FileNotFoundError(f"{ckpt_dir}: no checkpoint matching {pattern!r} to resume from.")
    return str(max(candidates, key=lambda p: int("".join(ch for ch in p.stem.split("=")[-1] if ch.isdigit()) or 0)))


class HandlerGroup:
    """Several handlers attached as one, so that a config's handler list stays a literal list that tools can append
    to (``--tracking mlflow`` appends its ``MLFlowHandler`` to ``validate#handlers``) while a bundle still fills in a
    list of its own (the base config's ``validate#image_handlers``). Disabled entries (``None``) are skipped.

    Args:
        handlers: objects with ``attach(engine)``.
    """

    def __init__(self, handlers: Sequence) -> None:
        self.handlers = [handler for handler in handlers if handler is not None]

    def attach(self, engine: Engine) -> None:
        for handler in self.handlers:
            handler.attach(engine)


class PruneCheckpointsHandler:
    """Keep only this run's newest training checkpoint: after every epoch (attach it after the ``CheckpointSaver``,
    whose handler must have written that epoch's file first), remove every other ``checkpoint_epoch=N.pt`` file, such
    as the one a resumed run started from, or those of an earlier run in the same folder (each run's saver keeps
    ``n_saved`` of its own files and knows nothing of earlier runs'). The file kept is the one named for the epoch
    that just ended, not the highest epoch in the folder: a fresh run into a folder holding a longer run's
    checkpoints keeps its own. Nothing is removed when that file is missing, and only rank 0 removes anything.

    Args:
        ckpt_dir: the folder the checkpoints are saved in.
        pattern: the checkpoint file names, ``*`` standing for the epoch.
    """

    def __init__(self, ckpt_dir: str | os.PathLike, pattern: str = "checkpoint_epoch=*.pt") -> None:
        self.ckpt_dir, self.pattern = Path(ckpt_dir), pattern

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        current = self.ckpt_dir / self.pattern.replace("*", str(engine.state.epoch))
        if not is_main_process() or not current.is_file():
            return
        for path in self.ckpt_dir.glob(self.pattern):
            if path != current:
                path.unlink(missing_ok=True)


class ReseedHandler:
    """Reseed a transform from the run's seed, so that random trajectories and appearances depend on the seed (and
    the epoch) alone, not on what ran before.

    * ``per_epoch=False``: at every engine start (a validation run sees the same data each time, so its metrics
      compare across epochs);
    * ``per_epoch=True``: at every epoch start with ``seed + epoch``, torch's global generator too (it draws the
      DataLoader's shuffling, random masks, dropout), so a resumed training run sees the same data as an uninterrupted
      one. Exact with ``num_workers=0`` (workers reseed themselves) and epochs that are whole passes over the data
      (``epoch_length`` null or the DataLoader's length: a pass cut by an epoch end continues in the next epoch).

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
        seed = self.seed + (engine.state.epoch if self.per_epoch else 0)
        self.transform.set_random_state(seed=seed)
        if self.per_epoch:
            torch.manual_seed(seed)


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

    def item_dir(self, engine: Engine) -> Path:
        """``<out_dir>/<name>`` of the engine's current item (``item_<iteration>`` when the batch has no name)."""
        return self.out_dir / str(engine.state.batch.get("name", [f"item_{engine.state.iteration:04d}"])[0])


class TrainingRecordHandler:
    """What rebuilds a trained network beside its weights, so that the stock inference config loads any trained
    model with no option repeated: when training starts, ``<out_dir>/training.json`` gets ``settings`` (the
    network's hyper-parameters), ``hyperparameters`` (every hyper-parameter of the run as used, overrides included:
    ``slicenav pack`` writes them into the archive as ``configs/trained.yaml``) and, with an ``encoder_path``, the
    pretrained export is copied (checked first) to ``<out_dir>/encoder`` and recorded as ``"encoder": "encoder"``
    (the bundle stays self-contained for a model zoo). Only rank 0 writes; both writes are atomic. Read back with
    :func:`~monai_slicenav.workflows.training_record`.

    Args:
        out_dir: the bundle's ``models`` folder.
        settings: JSON-serialisable hyper-parameters of the network, at the top level of the record.
        encoder_path: the exported encoder the network starts from; empty or None: none.
        hyperparameters: JSON-serialisable hyper-parameters of the whole run, under ``"hyperparameters"``.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        settings: Mapping | None = None,
        encoder_path: str | os.PathLike | None = None,
        hyperparameters: Mapping | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.settings = dict(settings or {})
        self.encoder_path = str(encoder_path or "")
        self.hyperparameters = dict(hyperparameters or {})

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        if not is_main_process():
            return
        if self.encoder_path and Path(self.encoder_path).resolve() != (self.out_dir / "encoder").resolve():
            copy_export(self.encoder_path, self.out_dir / "encoder")
        record = {**self.settings, "encoder": "encoder" if self.encoder_path else None}
        if self.hyperparameters:
            record["hyperparameters"] = self.hyperparameters
        atomic_write_json(self.out_dir / "training.json", record)
