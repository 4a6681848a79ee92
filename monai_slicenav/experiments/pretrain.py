"""One entry point for every pretraining variant (``slicenav pretrain``), with a matched step budget.

The variants, the bundles that train them and what they export are the table of :mod:`.variants`. A variant
trained by one bundle gets all ``steps`` optimizer steps; a variant trained on top of a stage-1 tokenizer (the
dynamics variants) gives half to the tokenizer bundle (shared by every such variant, trained once per cache) and
half to its own bundle.

Every stage runs its bundle through MONAI's ``ConfigWorkflow`` in ``<cache_dir>/<bundle>-<hash>``, where the hash
covers the bundle config, the overrides, the steps and the package version: a finished stage with the same hash is
reused, not retrained. ``<out>/encoder`` always holds the variant's encoder and ``<out>/pretrain.json`` the record
(stages, hashes, wall times, final validation metrics).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from ..data import volume_files
from ..encoders import copy_export, load_encoder, load_state_dict
from ..io import atomic_write_json
from ..workflows import appearance_contrast
from .cache import digest, reusable
from .variants import TOKENIZER_BUNDLE, VARIANT_TABLE, get_variant

__all__ = ["PRESETS", "bundles_dir", "pretrain", "run_stage", "stage_overrides"]

logger = logging.getLogger(__name__)

# Sizes of data and networks, as the bundles' own hyper-parameter names: each stage takes the ones its train config
# defines ("default" keeps each bundle's own values).
PRESETS: dict[str, dict] = {
    "default": {},
    "small": {  # CPU-friendly: 96^3 volumes, 64^2 slices, narrower networks
        # one 48^3 crop per volume: 2 x 48^3 voxels per static step against 32 slices of 64^2 pixels per slice step
        "num_synthetic": 8,
        "synth_size": 96,
        "slice_size": 64,
        "crop_size": 48,
        "crops_per_volume": 1,
        "num_steps": 7,
        "channels": [16, 32, 64],
        "dynamics_width": 64,
        "dynamics_depth": 2,
        "dynamics_heads": 4,
    },
    "micro": {  # smoke tests: seconds per stage
        "num_synthetic": 2,
        "num_val_synthetic": 1,
        "synth_size": 40,
        "slice_size": 32,
        "crop_size": 32,
        "num_steps": 3,
        "batch_size": 1,
        "num_workers": 0,
        "channels": [8, 16, 32],
        "dynamics_width": 32,
        "dynamics_depth": 1,
        "dynamics_heads": 2,
    },
}


def bundles_dir() -> Path:
    """The folder holding the bundles: the repository's ``bundles/`` (editable installs), else the copy installed
    under ``<prefix>/share/monai_slicenav/bundles``.

    Raises:
        FileNotFoundError: when neither exists.
    """
    for candidate in (
        Path(__file__).resolve().parents[2] / "bundles",
        Path(sys.prefix) / "share/monai_slicenav/bundles",
    ):
        if (candidate / "slicenav_tokenizer" / "configs" / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError("The monai_slicenav bundles are not installed (no bundles/slicenav_tokenizer/configs).")


def train_configs(bundle: str) -> list[str]:
    """The config files of a bundle's training run, in stacking order: the shared ``pretraining.yaml`` where the
    bundle has one, then ``train.yaml``."""
    configs = bundles_dir() / bundle / "configs"
    return [str(configs / name) for name in ("pretraining.yaml", "train.yaml") if (configs / name).is_file()]


def train_hyperparameters(bundle: str) -> set[str]:
    """The top-level keys of a bundle's training configs: the hyper-parameters a preset or override may set."""
    from monai.bundle import ConfigParser

    return {key for path in train_configs(bundle) for key in ConfigParser.load_config_file(path)}


def stage_overrides(bundle: str, preset: Mapping, steps: int, seed: int, extra: Mapping | None = None) -> dict:
    """The ``ConfigWorkflow`` overrides of one stage: the preset's hyper-parameters that this bundle's train configs
    define, the seed and one epoch of ``steps`` iterations validated at the end."""
    known = train_hyperparameters(bundle)
    overrides = {k: v for k, v in dict(preset).items() if k in known}
    overrides.update({"seed": int(seed), "max_epochs": 1, "epoch_length": int(steps), "val_interval": 1})
    overrides.update(extra or {})
    return overrides


def _config_digest(bundle: str, overrides: Mapping) -> str:
    """What determines a stage's result: the bundle's config files (every one it stacks), the overrides and the
    package version."""
    configs = bundles_dir() / bundle / "configs"
    texts = {path.name: path.read_text() for path in sorted(configs.glob("*")) if path.is_file()}
    return digest({"bundle": bundle, "configs": texts, "overrides": dict(overrides)})


def run_stage(bundle: str, overrides: Mapping, cache_dir: str | os.PathLike) -> dict:
    """Train one bundle with ``overrides`` in ``<cache_dir>/<bundle>-<hash>``, or reuse a finished run there.

    Returns:
        the stage record: bundle, root, hash, overrides, wall time, final validation metrics, reused.
    """
    from monai.bundle import ConfigWorkflow

    key = _config_digest(bundle, overrides)
    root = Path(cache_dir) / f"{bundle}-{key[:12]}"
    record_path = root / "stage.json"
    record = reusable(record_path, key, lambda _: _intact(bundle, root))
    if record is not None:
        logger.info("%s: reusing the finished run in %s", bundle, root)
        return {**record, "reused": True}
    if (root / "models").exists():  # an interrupted run of the same config: start it again cleanly
        shutil.rmtree(root / "models")
    configs = bundles_dir() / bundle / "configs"
    logger.info("%s: training %s iterations in %s", bundle, overrides.get("epoch_length"), root)
    start = time.perf_counter()
    workflow = ConfigWorkflow(
        config_file=train_configs(bundle),
        meta_file=str(configs / "metadata.json"),
        logging_file=str(configs / "logging.conf"),
        workflow_type="train",
        bundle_root=str(root),
        **dict(overrides),
    )
    workflow.initialize()
    workflow.run()
    evaluator = workflow.parser.get_parsed_content("validate#evaluator")
    metrics = {k: float(v) for k, v in evaluator.state.metrics.items()}
    trainer = workflow.parser.get_parsed_content("train#trainer")
    train_s = float(trainer.state.times.get("EPOCH_COMPLETED") or 0.0)  # the epochs' iterations, no validation
    workflow.finalize()
    record = {
        "bundle": bundle,
        "root": str(root),
        "hash": key,
        "overrides": dict(overrides),
        "wall_s": round(time.perf_counter() - start, 2),
        "steps_per_s": round(trainer.state.iteration / train_s, 3) if train_s > 0 else None,
        "val_metrics": metrics,
    }
    atomic_write_json(record_path, record)
    return {**record, "reused": False}


def _intact(bundle: str, root: Path) -> bool:
    """Whether a finished stage's weights and exports still load (a truncated or edited cache entry does not, and
    is then retrained rather than copied over a good export)."""
    models = root / "models"
    exports = {folder for v in VARIANT_TABLE.values() if v.bundle == bundle for folder in v.exports} or {"encoder"}
    try:
        load_state_dict(models / "model.pt")
        for name in sorted(exports):
            load_encoder(models / name)
    except (ValueError, FileNotFoundError) as err:
        logger.warning("%s: the cached run in %s is damaged (%s); training it again.", bundle, root, err)
        return False
    return True


def pretrain(
    variant: str,
    steps: int,
    out: str | os.PathLike,
    seed: int = 0,
    preset: str = "default",
    cache_dir: str | os.PathLike | None = None,
    extra_overrides: Mapping | None = None,
    data: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    val_data: str | os.PathLike | None = None,
    contrastive_weight: float = 0.0,
) -> dict:
    """Pretrain one variant with a budget of ``steps`` optimizer steps and export its encoder to ``<out>/encoder``.

    Args:
        variant: a name of :data:`~.variants.VARIANT_TABLE`.
        steps: optimizer steps in total (the dynamics variants split them between their two stages).
        out: output folder: ``encoder/`` (+ ``slice_encoder/`` for the dynamics variants) and ``pretrain.json``.
        seed: seeds data, initialisation and sampling of every stage.
        preset: data and network sizes, one of :data:`PRESETS`.
        cache_dir: where stage runs live and are reused; defaults to ``<out>/stages``. Share it between variants
            to train the common tokenizer stage once.
        extra_overrides: more ``ConfigWorkflow`` overrides for every stage (e.g. ``{"include_packaged": True}``).
        data: your own scans instead of the embedded synthetic volumes: a folder (searched recursively for NIfTI),
            a glob, a .txt/.csv list or a ``data_manifests/*.json`` manifest (with ``data_root``); checked before
            any training (:func:`~monai_slicenav.data.volume_files`).
        data_root: the dataset folder of a manifest given as ``data``.
        val_data: validation scans of your own (same forms); default: a seeded held-out split of ``data``.
        contrastive_weight: > 0 adds the appearance-contrastive term to the slice tokenizer's training
            (``tokenizer_only`` and the dynamics variants, whose tokenizer stage it changes; synthetic data only).

    Returns:
        the record written to ``pretrain.json``.

    Raises:
        ValueError: for an unknown variant or preset, or fewer steps than stages.
    """
    entry = get_variant(variant)
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}.")
    if int(steps) < entry.min_steps:
        raise ValueError(f"{variant} needs at least {entry.min_steps} steps, got {steps}.")
    out = Path(out)
    cache = Path(cache_dir) if cache_dir is not None else out / "stages"
    settings, extra = PRESETS[preset], dict(extra_overrides or {})
    tokenizer_extra = {}
    if appearance_contrast(contrastive_weight, None if data is None else str(data)):
        if not entry.trains_tokenizer:
            raise ValueError(f"contrastive_weight is a term of the slice tokenizer's loss; {variant} has no tokenizer.")
        tokenizer_extra = {"contrastive_weight": float(contrastive_weight)}
    if data is not None and entry.needs_labels:
        raise ValueError(
            f"{variant} learns from label maps (the synthetic engine); it cannot train on unlabelled --data."
        )
    if data is not None:  # fail on a wrong path now, not after the first stage trained on the wrong data
        files = volume_files(data, data_root)
        if val_data is not None:
            volume_files(val_data, data_root)
        extra.update({"data": str(data), "data_root": str(data_root or ""), "val_data": str(val_data or "")})
        extra.setdefault("volume_cache_dir", str(cache / "volume_cache"))  # every stage reads the scans loaded once
        logger.info("pretraining on %d volumes of your own from %s", len(files), data)
    start = time.perf_counter()
    stages, own = [], {**extra, **entry.overrides}
    if entry.on_tokenizer:
        first = int(steps) // 2
        tokenizer = run_stage(
            TOKENIZER_BUNDLE,
            stage_overrides(TOKENIZER_BUNDLE, settings, first, seed, {**extra, **tokenizer_extra}),
            cache,
        )
        stages.append(tokenizer)
        own["tokenizer_dir"] = tokenizer["root"]
        steps_left = int(steps) - first
    else:
        own.update(tokenizer_extra if entry.bundle == TOKENIZER_BUNDLE else {})
        steps_left = int(steps)
    stages.append(run_stage(entry.bundle, stage_overrides(entry.bundle, settings, steps_left, seed, own), cache))
    final = Path(stages[-1]["root"]) / "models"
    for folder, name in entry.exports.items():
        copy_export(final / folder, out / name)
    record = {
        "variant": variant,
        "steps": int(steps),
        "seed": int(seed),
        "preset": preset,
        "encoder": str(out / "encoder"),
        "wall_s": round(time.perf_counter() - start, 2),
        "stages": stages,
    }
    atomic_write_json(out / "pretrain.json", record)
    return record
