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
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from ..io import atomic_write_files, json_bytes, read_json_object
from .channels import expand_input_channels, input_channels
from .weights import load_into, load_state_dict, non_finite_keys

__all__ = [
    "EXPORT_FORMAT",
    "MAX_ENCODER_PARAMETERS",
    "ENCODER_ARCHITECTURES",
    "register_architecture",
    "export_paths",
    "read_record",
    "load_encoder",
    "export_encoder",
    "copy_export",
]

EXPORT_FORMAT = 1
MAX_ENCODER_PARAMETERS = 2**30  # 4 GiB of float32: far above any encoder here, far below a crafted record

ENCODER_ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {}
"""Architecture name -> class, filled by :func:`register_architecture` (the classes of
:mod:`monai_slicenav.encoders.architectures` register themselves when the package is imported)."""


def register_architecture(cls: type[nn.Module]) -> type[nn.Module]:
    """Class decorator: make ``cls`` (with a unique ``architecture`` name, ``arguments()`` and ``out_channels``)
    exportable and loadable."""
    ENCODER_ARCHITECTURES[cls.architecture] = cls
    return cls


def load_encoder(
    path: str | os.PathLike, strict: bool = True, map_location: str = "cpu", in_channels: int | None = None
) -> nn.Module:
    """Rebuild an exported encoder (any registered architecture) from a folder holding ``encoder.pt`` and
    ``encoder.json`` (or either file). ``in_channels`` > 1 on a single-channel export spreads its first convolution
    over that many input channels (:func:`~monai_slicenav.encoders.expand_input_channels`, mean mode).

    Raises:
        FileNotFoundError: when a file is missing.
        ValueError: for an unknown architecture or format, a file that is not a plain state dict of tensors
            (pickled objects are refused), missing/unexpected keys when ``strict`` (all named), or an
            ``in_channels`` the export cannot take.
    """
    weights, meta = export_paths(path)
    missing = [str(p) for p in (weights, meta) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{path}: an export needs both {weights.name} and {meta.name}; missing: {missing}.")
    record = read_record(meta)
    model = _build_checked(ENCODER_ARCHITECTURES[record["architecture"]], record.get("arguments", {}), meta)
    load_into(model, load_state_dict(weights, map_location=map_location), strict, str(weights))
    model.input_spec = dict(record.get("input", {}))  # what its inputs must look like (encoders.input_contract)
    if in_channels is not None and int(in_channels) != input_channels(model):
        model = expand_input_channels(model, int(in_channels))
    return model


def read_record(path: str | os.PathLike) -> dict:
    """The checked ``encoder.json`` of an export (its folder or either file): valid JSON, a known format and a
    registered architecture, ``arguments`` an object. Nothing is built or loaded.

    Raises:
        FileNotFoundError: when the record is missing.
        ValueError: for invalid JSON, an unknown format or architecture, or malformed arguments (named).
    """
    meta = export_paths(path)[1]
    if not meta.is_file():
        raise FileNotFoundError(f"{path}: no export record {meta.name} ({meta} is missing).")
    record = read_json_object(meta)
    if record.get("format") != EXPORT_FORMAT or record.get("architecture") not in ENCODER_ARCHITECTURES:
        raise ValueError(
            f"{meta}: unsupported export (format {record.get('format')!r}, architecture "
            f"{record.get('architecture')!r}); known architectures: {sorted(ENCODER_ARCHITECTURES)}."
        )
    if not isinstance(record.get("arguments", {}), Mapping):
        raise ValueError(f"{meta}: field 'arguments' must be an object, got {type(record['arguments']).__name__}.")
    return record


def _build_checked(architecture: type[nn.Module], arguments: object, meta: Path) -> nn.Module:
    """Build ``architecture(**arguments)`` from an untrusted record: first on the meta device (no memory), refusing
    malformed arguments and sizes beyond :data:`MAX_ENCODER_PARAMETERS`, then for real."""
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


def export_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(encoder.pt, encoder.json)`` of an export given as its folder or either file."""
    path = Path(path)
    if path.suffix in (".pt", ".json"):
        return path.with_suffix(".pt"), path.with_suffix(".json")
    return path / "encoder.pt", path / "encoder.json"


def export_encoder(
    encoder: nn.Module,
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
    broken = non_finite_keys(state)
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
    meta = json_bytes(record)  # fails on unserialisable provenance before any write
    weights_path, meta_path = atomic_write_files(
        {out_dir / "encoder.pt": buffer.getvalue(), out_dir / "encoder.json": meta}
    )
    return weights_path, meta_path


def copy_export(source: str | os.PathLike, target: str | os.PathLike) -> tuple[Path, Path]:
    """Copy an export (``encoder.pt`` + ``encoder.json``) from the folder ``source`` to ``target`` as one unit,
    after loading it: a damaged export raises (naming the file) and is never copied over a good one."""
    load_encoder(source)
    weights, meta = export_paths(source)
    target = Path(target)
    written = atomic_write_files({target / weights.name: weights.read_bytes(), target / meta.name: meta.read_bytes()})
    return written[0], written[1]
