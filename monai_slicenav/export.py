"""One encoder file format for every pretraining variant: ``encoder.pt`` + ``encoder.json``.

* ``encoder.pt``: a plain state dict of tensors, loadable with ``torch.load(path, weights_only=True)``;
* ``encoder.json``: ``{"format": 1, "architecture": name, "arguments": {...}, "input": {...}, "provenance": {...}}``
  -- the architecture name and constructor arguments rebuild the network; ``input`` states the normalisation, slice
  size and spacing the encoder was trained with; ``provenance`` says where it came from (bundle, version, data,
  steps).

Files from a model zoo are untrusted: loading never unpickles objects, reports missing and unexpected keys by name and
refuses partial loads unless ``strict=False``. Writing goes through temporary files and renames, so a failed export
never corrupts an existing one and never pairs new weights with an old config.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from .encoders import ENCODER_ARCHITECTURES, ContextEncoder, SliceEncoder, VolumeEncoder, encoders_of
from .io import atomic_write_files

__all__ = [
    "EXPORT_FORMAT",
    "MAX_ENCODER_PARAMETERS",
    "ENCODER_ARCHITECTURES",
    "SliceEncoder",
    "ContextEncoder",
    "VolumeEncoder",
    "encoders_of",
    "load_encoder",
    "export_encoder",
    "export_from_bundle",
    "load_state_dict",
    "load_into",
    "strip_prefixes",
]

logger = logging.getLogger(__name__)

EXPORT_FORMAT = 1
MAX_ENCODER_PARAMETERS = 2**30  # 4 GiB of float32: far above any encoder here, far below a crafted record
_PREFIXES = ("module.", "_orig_mod.")


def load_encoder(path: str | os.PathLike, strict: bool = True, map_location: str = "cpu") -> nn.Module:
    """Rebuild an exported encoder (any registered architecture) from a folder holding ``encoder.pt`` and
    ``encoder.json`` (or either file).

    Raises:
        FileNotFoundError: when a file is missing.
        ValueError: for an unknown architecture or format, a file that is not a plain state dict of tensors
            (pickled objects are refused), or missing/unexpected keys when ``strict`` (all named).
    """
    weights, meta = _export_paths(path)
    if not meta.is_file() or not weights.is_file():
        raise FileNotFoundError(
            f"{path}: an export needs both {weights.name} and {meta.name}; missing: "
            f"{[str(p) for p in (weights, meta) if not p.is_file()]}."
        )
    try:
        record = json.loads(meta.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{meta}: not valid JSON ({err}).") from err
    if record.get("format") != EXPORT_FORMAT or record.get("architecture") not in ENCODER_ARCHITECTURES:
        raise ValueError(
            f"{meta}: unsupported export (format {record.get('format')!r}, architecture "
            f"{record.get('architecture')!r}); known architectures: {sorted(ENCODER_ARCHITECTURES)}."
        )
    model = _build_checked(ENCODER_ARCHITECTURES[record["architecture"]], record.get("arguments", {}), meta)
    load_into(model, load_state_dict(weights, map_location=map_location), strict, str(weights))
    return model


def _build_checked(architecture: type[nn.Module], arguments: object, meta: Path) -> nn.Module:
    """Build ``architecture(**arguments)`` from an untrusted record: first on the meta device (no memory), refusing
    malformed arguments and sizes beyond :data:`MAX_ENCODER_PARAMETERS`, then for real."""
    if not isinstance(arguments, Mapping):
        raise ValueError(f"{meta}: field 'arguments' must be an object, got {type(arguments).__name__}.")
    try:
        with torch.device("meta"):
            shape_only = architecture(**arguments)
    except (TypeError, ValueError, KeyError) as err:
        raise ValueError(f"{meta}: field 'arguments' does not build {architecture.__name__} ({err}).") from err
    count = sum(t.numel() for t in (*shape_only.parameters(), *shape_only.buffers()))
    if count > MAX_ENCODER_PARAMETERS:
        raise ValueError(
            f"{meta}: field 'arguments' asks for {count:,} parameters, more than the {MAX_ENCODER_PARAMETERS:,} an "
            "encoder may have; refusing to allocate it."
        )
    return architecture(**arguments)


def _export_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    path = Path(path)
    if path.suffix in (".pt", ".json"):
        return path.with_suffix(".pt"), path.with_suffix(".json")
    return path / "encoder.pt", path / "encoder.json"


def strip_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` (DDP/DataParallel) and ``_orig_mod.`` (``torch.compile``) prefixes of state-dict keys."""
    cleaned = {}
    for key, value in state.items():
        while key.startswith(_PREFIXES):
            key = key[len(next(p for p in _PREFIXES if key.startswith(p))) :]
        cleaned[key] = value
    return cleaned


def load_state_dict(path: str | os.PathLike, map_location: str = "cpu") -> dict[str, torch.Tensor]:
    """Load a plain state dict safely (``weights_only=True``), prefixes stripped.

    Raises:
        FileNotFoundError: when the file is missing.
        ValueError: when it is unreadable, holds pickled objects, or is not a flat mapping of names to tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file.")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch words this "Unsupported global: GLOBAL x" or "unsupported GLOBAL x" depending on the path
        named = re.search(r"unsupported global\W+(?:global\s+)?([\w.]+)", str(err), flags=re.IGNORECASE)
        if named or "global" in str(err).lower():
            what = f" (it names {named.group(1)})" if named else ""
            raise ValueError(
                f"{path}: refused, the file holds pickled Python objects{what}, not a plain state dict of tensors; "
                "loading it could run arbitrary code, so it is not loaded."
            ) from err
        raise ValueError(f"{path}: not a readable torch checkpoint ({str(err).splitlines()[-1]}).") from err
    except (RuntimeError, EOFError, OSError) as err:
        raise ValueError(f"{path}: not a readable torch checkpoint ({type(err).__name__}: {err}).") from err
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a flat mapping of parameter names to tensors, got {type(state).__name__}.")
    return strip_prefixes(state)


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], strict: bool, source: str) -> None:
    """Load ``state`` into ``model`` after checking it: mismatched shapes always raise, missing or unexpected keys
    raise when ``strict`` (else they are logged); every problem names the keys and ``source``."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if mismatched:
        details = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}" for k in mismatched]
        raise ValueError(f"{source}: parameter shapes differ: {details}.")
    if missing or unexpected:
        message = f"{source}: missing keys {missing}; unexpected keys {unexpected}."
        if strict:
            raise ValueError(message + " Pass strict=False to load the matching keys only.")
        logger.warning(message)
    model.load_state_dict(state, strict=False)


def export_encoder(
    encoder: SliceEncoder,
    out_dir: str | os.PathLike,
    input_spec: Mapping | None = None,
    provenance: Mapping | None = None,
    navigation: Mapping | None = None,
) -> tuple[Path, Path]:
    """Write ``encoder.pt`` and ``encoder.json`` into ``out_dir`` atomically (each through a temporary file).

    Args:
        encoder: the module to export; its ``architecture`` must be registered in :data:`ENCODER_ARCHITECTURES`.
        out_dir: destination folder (created when missing).
        input_spec: how inputs must look, e.g. ``{"normalisation": "...", "slice_size": [128, 128],
            "spacing_mm": 1.0}``.
        provenance: where the weights come from, e.g. ``{"bundle": ..., "version": ..., "data": ..., "steps": ...}``.
        navigation: the keyword arguments of :class:`~monai_slicenav.transforms.RandSliceTrajectory` the training
            trajectories were drawn with (written under ``"navigation"`` when given), so that trajectories of the
            same regime can be rendered on other volumes.

    Returns:
        the two paths written.

    Raises:
        ValueError: for an unregistered architecture, or weights holding NaN or Inf (nothing is written).
    """
    if getattr(encoder, "architecture", None) not in ENCODER_ARCHITECTURES:
        raise ValueError(f"Cannot export {type(encoder).__name__}: its architecture is not registered.")
    out_dir = Path(out_dir)
    state = {k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()}
    broken = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise ValueError(
            f"Refusing to export to {out_dir}: non-finite values (NaN/Inf) in {len(broken)} weights, e.g. "
            f"{broken[:3]}; the training diverged (lower the learning rate). Existing files are left as they were."
        )
    buffer = io.BytesIO()
    torch.save(state, buffer)
    record = {
        "format": EXPORT_FORMAT,
        "architecture": encoder.architecture,
        "arguments": encoder.arguments(),
        "out_channels": encoder.out_channels,
        "input": dict(input_spec or {}),
        "provenance": dict(provenance or {}),
    }
    if navigation is not None:
        record["navigation"] = dict(navigation)
    meta = (json.dumps(record, indent=2) + "\n").encode()  # fails on unserialisable provenance before any write
    weights_path, meta_path = atomic_write_files(
        {out_dir / "encoder.pt": buffer.getvalue(), out_dir / "encoder.json": meta}
    )
    return weights_path, meta_path


def export_from_bundle(
    bundle_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: str = "configs/train.yaml",
    which: str = "encoder",
) -> tuple[Path, Path]:
    """Export an encoder of a trained pretraining bundle (tokenizer, dynamics or static-volume baseline): its
    ``network_def`` rebuilt from ``config``, weights from ``models/model.pt`` (loaded with ``weights_only=True``),
    provenance from ``configs/metadata.json``.

    Args:
        bundle_dir: the bundle folder.
        out_dir: destination of ``encoder.pt`` + ``encoder.json``.
        config: the config defining ``network_def``, relative to ``bundle_dir``.
        which: ``encoder`` (every bundle) or ``context_encoder`` (the dynamics bundle).

    Raises:
        FileNotFoundError: when the bundle lacks the config, the metadata or the weights.
        ValueError: when the weights do not fit the network (keys named), are not a plain state dict, or the
            network has no encoder called ``which``.
    """
    from monai.bundle import ConfigParser

    bundle_dir = Path(bundle_dir)
    paths = {"config": bundle_dir / config, "metadata": bundle_dir / "configs" / "metadata.json"}
    paths["weights"] = bundle_dir / "models" / "model.pt"
    for role, path in paths.items():
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing (the bundle's {role}).")
    parser = ConfigParser()
    parser.read_config(str(paths["config"]))
    parser["bundle_root"] = str(bundle_dir)
    network = parser.get_parsed_content("network_def", instantiate=True)
    load_into(network, load_state_dict(paths["weights"]), strict=True, source=str(paths["weights"]))
    try:
        encoders = encoders_of(network)
    except TypeError as err:
        raise ValueError(f"{paths['config']}: {err}") from err
    if which not in encoders:
        raise ValueError(f"{bundle_dir}: no encoder {which!r}; this bundle exports {sorted(encoders)}.")
    metadata = json.loads(paths["metadata"].read_text())
    provenance = {
        "bundle": metadata.get("name", bundle_dir.name),
        "version": metadata.get("version"),
        "weights": str(paths["weights"]),
        "data": metadata.get("data_source"),
    }
    input_spec = parser.get_parsed_content("encoder_input_spec") if "encoder_input_spec" in parser else {}
    return export_encoder(encoders[which], out_dir, input_spec, provenance)
