"""Export an encoder from a trained pretraining bundle folder (what ``slicenav export`` runs)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from ..io import read_json_object
from .architectures import encoders_of
from .record import export_encoder, read_record
from .trained import trained_network
from .weights import load_into, load_state_dict

__all__ = ["export_from_bundle"]


def export_from_bundle(
    bundle_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: str | Sequence[str] | None = None,
    which: str = "encoder",
) -> tuple[Path, Path]:
    """Export an encoder of a trained pretraining bundle (tokenizer, dynamics or static-volume baseline), weights from
    ``models/model.pt`` (loaded with ``weights_only=True``), provenance from ``configs/metadata.json``.

    The network is rebuilt from what the trained run recorded (its exported ``encoder.json``, see
    :func:`~monai_slicenav.encoders.trained.trained_network`), with the recorded input specification and navigation
    regime, so the export matches what was trained whatever the overrides, and no config is evaluated. Only a
    bundle without a record falls back to ``network_def`` of ``config`` (MONAI configs are code: trust the source).

    Args:
        bundle_dir: the bundle folder.
        out_dir: destination of ``encoder.pt`` + ``encoder.json``.
        config: the fallback config file(s) defining ``network_def``, relative to ``bundle_dir``; by default the
            training configs in stacking order (``configs/pretraining.yaml`` where it has one, ``configs/train.yaml``).
        which: ``encoder`` (every bundle) or ``context_encoder`` (the dynamics bundle).

    Raises:
        FileNotFoundError: when the bundle lacks the metadata or the weights (or, without a record, the config).
        ValueError: when the weights do not fit the network (keys named), are not a plain state dict, or the
            network has no encoder called ``which``.
    """
    bundle_dir = Path(bundle_dir)
    paths = {"metadata": bundle_dir / "configs" / "metadata.json", "weights": bundle_dir / "models" / "model.pt"}
    for role, path in paths.items():
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing (the bundle's {role}).")
    recorded = bundle_dir / "models" / "encoder" / "encoder.json"
    if recorded.is_file():
        network = trained_network(bundle_dir, load_weights=True)
        record = read_record(bundle_dir / "models" / which if (bundle_dir / "models" / which).is_dir() else recorded)
        input_spec, navigation, source = record.get("input", {}), record.get("navigation"), recorded
    else:
        network, input_spec, source = _network_from_config(bundle_dir, config, paths["weights"])
        navigation = None
    try:
        encoders = encoders_of(network)
    except TypeError as err:
        raise ValueError(f"{source}: {err}") from err
    if which not in encoders:
        raise ValueError(f"{bundle_dir}: no encoder {which!r}; this bundle exports {sorted(encoders)}.")
    metadata = read_json_object(paths["metadata"])
    provenance = {
        "bundle": metadata.get("name", bundle_dir.name),
        "version": metadata.get("version"),
        "weights": str(paths["weights"]),
        "data": metadata.get("data_source"),
    }
    return export_encoder(encoders[which], out_dir, input_spec, provenance, navigation)


def _network_from_config(
    bundle_dir: Path, config: str | Sequence[str] | None, weights: Path
) -> tuple[nn.Module, dict, Path]:
    """``network_def`` of the bundle's config(s) with ``weights`` loaded, its ``encoder_input_spec``, the config."""
    from monai.bundle import ConfigParser

    if config is None:
        stacked = [f"configs/{name}" for name in ("pretraining.yaml", "train.yaml")]
        config = [c for c in stacked if (bundle_dir / c).is_file()] or stacked[-1:]
    configs = [bundle_dir / c for c in ([config] if isinstance(config, str) else config)]
    for path in configs:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing (the bundle's config {path.name}).")
    parser = ConfigParser()
    parser.read_config([str(c) for c in configs])
    parser["bundle_root"] = str(bundle_dir)
    network = parser.get_parsed_content("network_def", instantiate=True)
    load_into(network, load_state_dict(weights), strict=True, source=str(weights))
    input_spec = parser.get_parsed_content("encoder_input_spec") if "encoder_input_spec" in parser else {}
    return network, input_spec, configs[-1]
