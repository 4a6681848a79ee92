"""Trained stages rebuilt from what their runs recorded: the frozen tokenizer of stage 2, and the networks of the
inference configs, so that a model of any preset or override loads with no network override. Records are read
through :mod:`monai_slicenav.encoders` (the export format), weights with ``weights_only=True``."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from torch import nn

from ..encoders import load_into, load_state_dict, read_record
from ..io import read_json_object
from ..networks.navigator import SliceNavigator
from ..networks.tokenizer import SliceTokenizer, TokenizerConfig
from ..networks.volume_mae import VolumeMAE

__all__ = [
    "training_record",
    "load_tokenizer_weights",
    "stage_models",
    "recorded_navigation",
    "trained_navigator",
    "trained_network",
]

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
        exported = TokenizerConfig(**read_record(weights).get("arguments", {}).get("config", {}))
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


def stage_models(source: str | os.PathLike) -> Path:
    """The ``models`` folder of a trained dynamics stage given as a bundle root, its ``models`` folder, or a
    ``slicenav pretrain`` output folder of a dynamics variant (its ``pretrain.json`` names the stage).

    Raises:
        FileNotFoundError: when it lacks the context-encoder record or the weights.
    """
    source = Path(source)
    if (source / "pretrain.json").is_file():
        source = Path(read_json_object(source / "pretrain.json")["stages"][-1]["root"])
    models = source / "models" if (source / "models").is_dir() else source
    missing = [str(p) for p in (models / "context_encoder" / "encoder.json", models / "model.pt") if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{source}: not a trained dynamics stage; missing {missing}.")
    return models


def recorded_navigation(source: str | os.PathLike) -> dict:
    """The navigation regime a trained dynamics stage (see :func:`stage_models`) was trained with: the keyword
    arguments of ``RandSliceTrajectoryd`` recorded in its context encoder's ``encoder.json``.

    Raises:
        ValueError: for a record without one (trained before it was recorded).
    """
    record_path = stage_models(source) / "context_encoder" / "encoder.json"
    navigation = read_record(record_path).get("navigation")
    if not isinstance(navigation, dict):
        raise ValueError(f"{record_path}: no 'navigation' regime recorded (trained before it was recorded).")
    return navigation


def trained_navigator(source: str | os.PathLike, load_weights: bool = True) -> SliceNavigator:
    """Rebuild a trained dynamics stage's :class:`SliceNavigator` from what its run recorded, whatever preset or
    overrides it was trained with: the architecture from ``models/context_encoder/encoder.json`` (tokenizer and
    dynamics configs), the pose heads from the keys of ``models/model.pt``, and (``load_weights``) its weights, read
    with ``weights_only=True``. The navigator is returned in eval mode.

    Args:
        source: as :func:`stage_models` takes it.

    Raises:
        FileNotFoundError: when the record or the weights are missing.
        ValueError: for a malformed record, or weights that do not match it (keys named).
    """
    models = stage_models(source)
    record_path, weights = models / "context_encoder" / "encoder.json", models / "model.pt"
    arguments = read_record(record_path).get("arguments", {})
    try:
        tokenizer_config, dynamics_config = dict(arguments["tokenizer"]), dict(arguments["dynamics"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(
            f"{record_path}: not a context-encoder record with tokenizer and dynamics arguments ({err})."
        ) from err
    state = load_state_dict(weights)
    heads = {name: any(k.startswith(f"{name}.") for k in state) for name in ("pose_head", "gap_head")}
    navigator = SliceNavigator(SliceTokenizer(**tokenizer_config), dynamics_config, **heads)
    if load_weights:
        load_into(navigator, state, True, str(weights))
    return navigator.eval()


def trained_network(source: str | os.PathLike, load_weights: bool = False) -> nn.Module:
    """The training network of a trained pretraining bundle (its root or ``models`` folder), rebuilt from the
    encoder record its run exported: a :class:`SliceTokenizer` (tokenizer bundle, ``models/encoder``), a
    :class:`VolumeMAE` (static-volume baseline) or a :class:`SliceNavigator` (dynamics bundle,
    ``models/context_encoder``; see :func:`trained_navigator`). What inference configs use as ``network_def``, so a
    model trained with any preset or override loads with no network override. ``load_weights`` also loads
    ``models/model.pt`` (else a ``CheckpointLoader`` does).

    Raises:
        FileNotFoundError: when the bundle has no exported record (train it first).
        ValueError: for a malformed record or an architecture without a training network.
    """
    source = Path(source)
    models = source / "models" if (source / "models").is_dir() else source
    if (models / "context_encoder" / "encoder.json").is_file():
        return trained_navigator(models, load_weights=load_weights)
    record_path = models / "encoder" / "encoder.json"
    if not record_path.is_file():
        raise FileNotFoundError(
            f"{source}: no trained model to rebuild ({record_path} is missing); train the bundle first, or pass the "
            "bundle root of a trained one as --bundle_root."
        )
    record = read_record(record_path)
    builders = {"slice_tokenizer_encoder": SliceTokenizer, "slicenav_volume_encoder": VolumeMAE}
    if record["architecture"] not in builders:
        raise ValueError(f"{record_path}: architecture {record['architecture']!r} has no training network here.")
    config = record.get("arguments", {}).get("config")
    if not isinstance(config, dict):
        raise ValueError(f"{record_path}: field 'arguments.config' must be an object.")
    try:
        network = builders[record["architecture"]](**config)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{record_path}: 'arguments.config' does not build the network ({err}).") from err
    if load_weights:
        load_into(network, load_state_dict(models / "model.pt"), True, str(models / "model.pt"))
    return network


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
    encoder = record.pop("encoder", None)
    if encoder is not None and not isinstance(encoder, str):
        raise ValueError(f"{path}: field 'encoder' must be a folder name or null, got {encoder!r}.")
    return {**record, "encoder_path": str(models / encoder) if encoder else ""}
