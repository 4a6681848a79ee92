"""Export an encoder from a trained pretraining bundle folder (what ``slicenav export`` runs)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from .architectures import encoders_of
from .record import export_encoder
from .weights import load_into, load_state_dict

__all__ = ["export_from_bundle"]


def export_from_bundle(
    bundle_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: str | Sequence[str] | None = None,
    which: str = "encoder",
) -> tuple[Path, Path]:
    """Export an encoder of a trained pretraining bundle (tokenizer, dynamics or static-volume baseline): its
    ``network_def`` rebuilt from ``config``, weights from ``models/model.pt`` (loaded with ``weights_only=True``),
    provenance from ``configs/metadata.json``.

    Args:
        bundle_dir: the bundle folder.
        out_dir: destination of ``encoder.pt`` + ``encoder.json``.
        config: the config file(s) defining ``network_def``, relative to ``bundle_dir``; by default the bundle's
            training configs in stacking order (``configs/pretraining.yaml`` where it has one, ``configs/train.yaml``).
        which: ``encoder`` (every bundle) or ``context_encoder`` (the dynamics bundle).

    Raises:
        FileNotFoundError: when the bundle lacks the config, the metadata or the weights.
        ValueError: when the weights do not fit the network (keys named), are not a plain state dict, or the
            network has no encoder called ``which``.
    """
    from monai.bundle import ConfigParser

    bundle_dir = Path(bundle_dir)
    if config is None:
        stacked = [f"configs/{name}" for name in ("pretraining.yaml", "train.yaml")]
        config = [c for c in stacked if (bundle_dir / c).is_file()] or stacked[-1:]
    configs = [bundle_dir / c for c in ([config] if isinstance(config, str) else config)]
    paths = {f"config {c.name}": c for c in configs}
    paths.update({"metadata": bundle_dir / "configs" / "metadata.json", "weights": bundle_dir / "models" / "model.pt"})
    for role, path in paths.items():
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing (the bundle's {role}).")
    parser = ConfigParser()
    parser.read_config([str(c) for c in configs])
    parser["bundle_root"] = str(bundle_dir)
    network = parser.get_parsed_content("network_def", instantiate=True)
    load_into(network, load_state_dict(paths["weights"]), strict=True, source=str(paths["weights"]))
    try:
        encoders = encoders_of(network)
    except TypeError as err:
        raise ValueError(f"{configs[-1]}: {err}") from err
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
