"""Trained pretraining networks rebuilt from what their runs recorded (the exported ``encoder.json`` records and
the keys of ``models/model.pt``), whatever preset or override they were trained with: what the inference configs,
``slicenav export``, ``slicenav evaluate`` and the benches load. Weights are read with ``weights_only=True``."""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from ..io import read_json_object
from ..networks.navigator import SliceNavigator
from ..networks.tokenizer import SliceTokenizer
from .record import ENCODER_ARCHITECTURES, read_record
from .weights import load_into, load_state_dict

__all__ = ["stage_models", "recorded_navigation", "trained_navigator", "trained_network"]


def stage_models(source: str | os.PathLike) -> Path:
    """The ``models`` folder of a trained dynamics stage given as a bundle root, its ``models`` folder, or a
    ``slicenav pretrain`` output folder of a dynamics variant (its ``pretrain.json`` names the stage).

    Raises:
        FileNotFoundError: when it lacks the context-encoder record or the weights.
    """
    models = _models(source)
    missing = [str(p) for p in (models / "context_encoder" / "encoder.json", models / "model.pt") if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{source}: not a trained dynamics stage; missing {missing}.")
    return models


def recorded_navigation(source: str | os.PathLike) -> dict:
    """The navigation regime a trained slice bundle was trained with: the keyword arguments of
    ``RandSliceTrajectoryd`` recorded in its exported ``encoder.json`` (the context encoder's for a dynamics stage,
    else the slice encoder's). ``source`` is a bundle root, its ``models`` folder, or a ``slicenav pretrain`` output
    folder. What every inference chain that samples trajectories for a trained model draws them with.

    Raises:
        FileNotFoundError: when no exported record is found (train the bundle first).
        ValueError: for a record without one (trained before it was recorded, or a 3D encoder's).
    """
    models = _models(source)
    for name in ("context_encoder", "encoder"):
        record_path = models / name / "encoder.json"
        if record_path.is_file():
            navigation = read_record(record_path).get("navigation")
            if not isinstance(navigation, dict):
                raise ValueError(f"{record_path}: no 'navigation' regime recorded (not trained on trajectories).")
            return navigation
    raise FileNotFoundError(f"{source}: no exported encoder record under {models}; train the bundle first.")


def _models(source: str | os.PathLike) -> Path:
    """The ``models`` folder of a bundle root, of itself, or of a ``slicenav pretrain`` output's last stage."""
    source = Path(source)
    if (source / "pretrain.json").is_file():
        source = Path(read_json_object(source / "pretrain.json")["stages"][-1]["root"])
    return source / "models" if (source / "models").is_dir() else source


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
    encoder record its run exported: a :class:`SliceNavigator` (dynamics bundle, ``models/context_encoder``; see
    :func:`trained_navigator`), else the network class of the exported architecture's ``cut_from`` that builds
    from the record and matches the keys of ``models/model.pt`` (``SliceTokenizer``, ``VolumeMAE``,
    ``VoxelContrastiveNet``). What inference configs use as ``network_def``, so a
    model trained with any preset or override loads with no network override. ``load_weights`` also loads
    ``models/model.pt`` (else a ``CheckpointLoader`` does).

    Raises:
        FileNotFoundError: when the bundle has no exported record (train it first).
        ValueError: for a malformed record or an architecture without a training network.
    """
    models = _models(source)
    if (models / "context_encoder" / "encoder.json").is_file():
        return trained_navigator(models, load_weights=load_weights)
    record_path = models / "encoder" / "encoder.json"
    if not record_path.is_file():
        raise FileNotFoundError(
            f"{source}: no trained model to rebuild ({record_path} is missing); train the bundle first, or pass the "
            "bundle root of a trained one as --bundle_root."
        )
    weights = models / "model.pt"
    state = load_state_dict(weights) if load_weights else None
    network = _training_network(read_record(record_path), record_path, weights, state)
    if state is not None:
        load_into(network, state, True, str(weights))
    return network


def _training_network(record: dict, record_path: Path, weights: Path, state: dict | None = None) -> nn.Module:
    """The training network an exported record was cut from: built from ``arguments.config`` with each class the
    architecture names in ``cut_from``; where several build, the one whose keys are those of ``weights`` (``state``:
    those weights, already read)."""
    architecture = ENCODER_ARCHITECTURES.get(record["architecture"])
    config = record.get("arguments", {}).get("config")
    if not isinstance(config, dict):
        raise ValueError(f"{record_path}: field 'arguments.config' must be an object.")
    built, errors = [], []
    for network_class in getattr(architecture, "cut_from", ()):
        try:
            built.append(network_class(**config))
        except (TypeError, ValueError) as err:
            errors.append(f"{network_class.__name__}: {err}")
    if not built:
        reason = "; ".join(errors) or "no training network here"
        raise ValueError(f"{record_path}: architecture {record['architecture']!r} does not build ({reason}).")
    if len(built) == 1:
        return built[0]
    keys = set(state if state is not None else load_state_dict(weights))
    matching = [network for network in built if set(network.state_dict()) == keys]
    if not matching:
        names = [type(network).__name__ for network in built]
        raise ValueError(f"{weights}: the weights' keys match none of the training networks {names}.")
    return matching[0]
