"""What the workflows load from earlier runs: the frozen tokenizer of stage 2 and a downstream bundle's training
record (the networks of trained pretraining stages are rebuilt by :mod:`monai_slicenav.encoders.trained`)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..encoders import SliceEncoder, load_into, load_state_dict, read_record
from ..io import read_json_object
from ..networks.tokenizer import SliceTokenizer, TokenizerConfig

__all__ = ["training_record", "load_tokenizer_weights"]

logger = logging.getLogger(__name__)


def load_tokenizer_weights(tokenizer: SliceTokenizer, source: str | os.PathLike) -> SliceTokenizer:
    """Load trained weights into the (frozen) tokenizer of the dynamics stage and return it.

    ``source`` is a trained tokenizer bundle (``models/model.pt``: encoder and decoder), a ``model.pt`` file, or
    an exported encoder folder (``encoder.pt`` + ``encoder.json``: the encoder only; the decoder keeps its random
    weights, so decoded predictions in TensorBoard and rollout strips are then meaningless, and a warning says so).
    All loads use ``weights_only=True``.

    Raises:
        FileNotFoundError: when ``source`` holds none of these.
        ValueError: when the weights or the export's config do not match ``tokenizer`` (keys or fields named).
    """
    source = Path(source)
    candidates = [source] if source.is_file() else [source / "models" / "model.pt", source / "encoder.pt"]
    weights = next((p for p in candidates if p.is_file()), None)
    if weights is None:
        raise FileNotFoundError(
            f"{source}: no trained tokenizer; expected one of {[str(p) for p in candidates]} "
            "(train the slicenav_tokenizer bundle first, or point tokenizer_dir at its bundle root or export)."
        )
    state = load_state_dict(weights)
    if weights.name == "encoder.pt":
        record = read_record(weights)
        if record["architecture"] != SliceEncoder.architecture:
            raise ValueError(
                f"{weights.with_suffix('.json')}: architecture {record['architecture']!r} is not a slice tokenizer's "
                f"encoder ({SliceEncoder.architecture!r}); point tokenizer_dir at a trained slicenav_tokenizer."
            )
        exported = TokenizerConfig(**record.get("arguments", {}).get("config", {}))
        if exported != tokenizer.config:
            raise ValueError(
                f"{weights.parent}: the export's tokenizer config {exported} differs from {tokenizer.config}."
            )
        load_into(tokenizer.encoder, {k.removeprefix("encoder."): v for k, v in state.items()}, True, str(weights))
        logger.warning(
            "%s: encoder weights only; the tokenizer's decoder is untrained (decoded images are noise).", weights
        )
    else:
        load_into(tokenizer, state, True, str(weights))
    for parameter in tokenizer.parameters():
        parameter.requires_grad_(False)
    return tokenizer.eval()


def training_record(source: str | os.PathLike) -> dict:
    """The settings a trained bundle (its root or ``models`` folder) recorded with
    :class:`~monai_slicenav.workflows.TrainingRecordHandler`, with ``encoder_path`` resolved: the bundle's own copy
    of the pretrained export, or ``""`` when it trained from scratch.

    Raises:
        FileNotFoundError: when the bundle has no ``models/training.json`` (train it first).
        ValueError: for a malformed record (the file is named).
    """
    source = Path(source)
    models = source / "models" if (source / "models").is_dir() else source
    path = models / "training.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: missing; train the bundle first (or pass the network's settings as trained, e.g. --encoder_path)."
        )
    record = read_json_object(path)
    record.pop("hyperparameters", None)  # the whole run's, for `slicenav pack`; not the network's settings
    encoder = record.pop("encoder", None)
    if encoder is not None and not isinstance(encoder, str):
        raise ValueError(f"{path}: field 'encoder' must be a folder name or null, got {encoder!r}.")
    return {**record, "encoder_path": str(models / encoder) if encoder else ""}
