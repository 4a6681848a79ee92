"""One command for the whole comparison (``slicenav evaluate``): pretrain every variant with the same data and step
budget, then score its encoder on real anatomy held out from pretraining.

Pretraining uses only the embedded synthetic volumes (``include_packaged`` stays off), so the packaged real templates
are never seen before evaluation; the record says which volumes each task used. Tasks:

* ``probe``: spatial probes of the frozen encoder (:mod:`.probes`): pose R^2 and gap R^2, fitted on
  slices of two templates and scored on two others; on the encoder's pooled features as they are, and narrowed to
  ``equal_width`` principal components (``pose_r2_w16``, ``gap_r2_w16``) so that wide and narrow encoders are also
  compared at an equal feature count;
* ``segmentation``: the segmentation bundle, n = 1 (and n = 5 where the budget says so), mean Dice on MNI152;
* ``registration``: the registration bundle's feature similarity on the deformed-copy pair, mean Dice after; the
  same registration with intensities (LNCC, no encoder) is computed once as a reference line;
* ``controllability`` (the dynamics variants): does the trained stage 2 use its actions? On trajectories of the
  regime it was trained with, rendered on held-out synthetic volumes (``_syn``) and on the four real templates
  (``_real``), the same volumes and trajectories for every seed (so the spread over seeds is training's): next-step
  latent error with the true actions over the copy baseline (``ctrl_true_copy``), true over shuffled actions
  (``ctrl_true_shuffled``), true over the in-plane warp of the current slice (``ctrl_true_warp``: below 1, the
  model beats the simplest use of its action) and the decoded PSNR gap true - shuffled in dB (``ctrl_gap_db``); see
  :mod:`monai_slicenav.workflows.controllability`. Lower ratios and a larger gap are better; ``val_latent_mse`` is
  the stage's own validation loss (next-step latent MSE on its held-out synthetic trajectories, drawn with the
  bundles' fixed ``val_seed``: the same for every dynamics variant and seed); other variants show "—".

Every (variant, seed, task) cell is a JSON file under ``<out>/cells`` holding a hash of its settings; finished cells
with the same hash are not recomputed, so an interrupted run resumes. ``random`` is the randomly initialised encoder
of the tokenizer architecture (seeded), the floor every pretraining must beat. ``dynamics_untrained`` is a control:
the dynamics variants' stage-1 tokenizer under a seeded, untrained dynamics trunk, so that what stage 2 learned is
told apart from what the wider context-encoder features give a probe by themselves.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from ..data import describe_data, embedded_datalist, sha256_of
from ..downstream.registration import RegistrationConfig
from ..downstream.registration_run import default_pairs, run_registration
from ..encoders import ContextEncoder, SliceEncoder, export_encoder, load_encoder, read_record
from ..networks.tokenizer import TokenizerConfig
from ..workflows import held_out_controllability, recorded_navigation, stage_models, trained_navigator
from .cache import cached
from .dense_probe import DENSE_PENALTY, DENSE_PROBE_CASES, regime_stride
from .pretrain import PRESETS, pretrain
from .probe_cells import (
    DENSE_CONTEXT,
    PROBE_TEST,
    PROBE_TRAIN,
    dense_cell,
    installed,
    pixel_reference,
    probe_cell,
)
from .report import write_results
from .variants import VARIANT_TABLE, evaluated_variants

__all__ = [
    "BUDGETS",
    "DEFAULT_OUT",
    "chosen_variants",
    "evaluate",
    "seed_list",
    "segmentation_dice",
    "untrained_trunk",
]

logger = logging.getLogger(__name__)

DEFAULT_OUT = "slicenav_evaluation"  # where results go without --out (git-ignored in the repository)
BUDGETS: dict[str, dict] = {
    "micro": {  # a smoke run of a few minutes (the test suite)
        "preset": "micro",
        "steps": 4,
        "probe": {"pairs": 24, "slice_size": 32, "spacing_mm": 4.0, "equal_width": 16},
        "segmentation": {
            "shots": [1],
            "spacing_mm": 4.0,
            "roi_size": 32,
            "samples_per_volume": 1,
            "max_epochs": 1,
            "epoch_length": 2,
            "decoder_channels": [8, 8, 8],
        },
        "registration": {"spacing_mm": 4.0, "iterations": [5, 5, 5]},
        "dense": {"spacing_mm": 6.0},
        "controllability": {"synthetic": 1, "trajectories": 4},
    },  # fmt: skip
    "small": {  # 3 seeds in about 2 hours on a 2-core CPU (35-45 minutes a seed)
        "preset": "small",
        "steps": 600,
        "probe": {"pairs": 128, "slice_size": 64, "spacing_mm": 2.0, "equal_width": 16},
        "segmentation": {
            "shots": [1, 5],
            "spacing_mm": 3.0,
            "roi_size": 48,
            "samples_per_volume": 2,
            "max_epochs": 3,
            "epoch_length": 10,
            "decoder_channels": [32, 16, 16],
        },
        "registration": {"spacing_mm": 3.0, "iterations": [40, 30, 20]},
        "dense": {"spacing_mm": 3.0},
        "controllability": {"synthetic": 4, "trajectories": 16},
    },  # fmt: skip
    "paper": {  # what a GPU run would use (documented; runs anywhere, slowly)
        "preset": "default",
        "steps": 20000,
        "probe": {"pairs": 512, "slice_size": 128, "spacing_mm": 1.0, "equal_width": 16},
        "segmentation": {
            "shots": [1, 2, 5],
            "spacing_mm": 1.5,
            "roi_size": 96,
            "samples_per_volume": 4,
            "max_epochs": 50,
            "epoch_length": 20,
            "decoder_channels": [64, 32, 16],
        },
        "registration": {"spacing_mm": 1.5, "iterations": [100, 60, 40]},
        "dense": {"spacing_mm": 1.5},
        "controllability": {"synthetic": 8, "trajectories": 32},
    },  # fmt: skip
}
REGISTRATION_PAIR = "colin27_deformed"  # the pair with a known answer: labels moved with the image
CONTROLLABILITY_SEEDS = {"volumes": 1000, "trajectories": 0}  # held-out test data: the same for every seed
CONTROLLABILITY_COLUMNS = {"ctrl_true_copy": "ctrl_ratio_true_copy", "ctrl_true_shuffled": "ctrl_ratio_true_shuffled",
                           "ctrl_true_warp": "ctrl_ratio_true_warp", "ctrl_gap_db": "ctrl_psnr_gap_db"}  # fmt: skip


def _random_encoder(out: Path, preset: str, seed: int) -> Path:
    channels = PRESETS[preset].get("channels") or TokenizerConfig().channels
    torch.manual_seed(seed)
    export_encoder(SliceEncoder(TokenizerConfig(channels=tuple(channels))), out, provenance={"variant": "random"})
    return out


def untrained_trunk(trained: Path, out: Path, seed: int) -> Path:
    """The control encoder: ``trained`` context encoder's tokenizer weights under a freshly initialised trunk, with
    its record's input contract and navigation regime (so context read-outs step as for the trained one)."""
    model, record = load_encoder(trained), read_record(trained)
    torch.manual_seed(seed)
    control = ContextEncoder(**model.arguments())
    control.encoder.load_state_dict(model.encoder.state_dict())
    provenance = {"variant": "dynamics_untrained", "tokenizer_from": str(trained)}
    export_encoder(control, out, record.get("input"), provenance, record.get("navigation"))
    return out


def segmentation_dice(encoder: str | os.PathLike, root: Path, shots: int, settings: Mapping, seed: int = 0) -> float:
    """Train the segmentation bundle on ``shots`` cases from ``encoder`` (empty: random initialisation) in ``root``,
    evaluate it (``evaluate.yaml``) and return the held-out case's mean Dice. ``settings`` are bundle overrides."""
    from monai.bundle import ConfigWorkflow

    from .pretrain import bundles_dir

    configs = bundles_dir() / "slicenav_segmentation" / "configs"
    common = {
        **{k: v for k, v in settings.items() if k != "shots"},
        "val_interval": settings["max_epochs"] + 1,  # no validation while training: evaluate.yaml scores the result
        "encoder_path": str(encoder),
        "num_train": shots,
        "seed": seed,
    }
    train_file, evaluate_file = str(configs / "train.yaml"), str(configs / "evaluate.yaml")
    for files, kind in ((train_file, "train"), ([train_file, evaluate_file], "eval")):
        flow = ConfigWorkflow(config_file=files, workflow_type=kind, bundle_root=str(root), **common)
        flow.initialize()
        flow.run()
        if kind == "eval":
            evaluator = flow.parser.get_parsed_content("validate#evaluator")
            dice = float(evaluator.state.metrics[evaluator.state.key_metric_name])
        flow.finalize()
    return dice


def _score(encoder: Path, cell_dir: Path, seed: int, settings: Mapping, probe_sets: dict) -> dict:
    """Every task's cell for one encoder (computed, or reused when finished with the same settings and weights); a
    context encoder's segmentation and registration also with :data:`DENSE_CONTEXT` at its regime's step."""
    probe_cfg, seg_cfg, reg_cfg = settings["probe"], settings["segmentation"], settings["registration"]
    weights = sha256_of(encoder / "encoder.pt")
    row = probe_cell(encoder, cell_dir, weights, probe_cfg, probe_sets)
    row.update(dense_cell(encoder, cell_dir, weights, settings["dense"], probe_sets))
    in_context = math.isfinite(row["dense_dice_ctx"])  # a context encoder
    stride = regime_stride(encoder, seg_cfg["spacing_mm"]) if in_context else 1
    for suffix, context in (("", {}), ("_ctx", {"context": DENSE_CONTEXT, "context_stride": stride})):
        for shots in seg_cfg["shots"]:
            if suffix and not in_context:
                row[f"seg_dice_n{shots}{suffix}"] = math.nan
                continue
            overrides = {**seg_cfg, **context}
            cell = cached(
                cell_dir / f"segmentation_n{shots}{suffix}.json",
                {"w": weights, "n": shots, **overrides},
                lambda n=shots, o=overrides, s=suffix: {
                    "dice": segmentation_dice(encoder, cell_dir / f"seg_n{n}{s}", n, o, seed)
                },
            )
            row[f"seg_dice_n{shots}{suffix}"] = cell["dice"]
    row["reg_dice"] = _registration(cell_dir, reg_cfg, encoder, weights)["mean_dice_after"]
    reg_ctx = _registration(cell_dir, reg_cfg, encoder, weights, DENSE_CONTEXT) if in_context else None
    row["reg_dice_ctx"] = reg_ctx["mean_dice_after"] if reg_ctx else math.nan
    return row


def _registration(
    cell_dir: Path, settings: Mapping, encoder: Path | None = None, weights: str = "", context: str = "none"
) -> dict:
    """The registration cell of the deformed-copy pair: encoder features (seen with ``context``, stepping at the
    encoder's regime as the dense probe does: :func:`~.dense_probe.regime_stride`), or intensities (LNCC) without an
    encoder."""
    suffix = "" if context == "none" else "_ctx"
    stride = regime_stride(encoder, settings["spacing_mm"]) if suffix else 1

    def compute() -> dict:
        config = RegistrationConfig(iterations=settings["iterations"], context=context, context_stride=stride)
        similarity = "features" if encoder is not None else "intensity"
        pair = next(p for p in default_pairs() if p["name"] == REGISTRATION_PAIR)
        return run_registration(
            pair, cell_dir / f"registration{suffix}", similarity, encoder or "", settings["spacing_mm"], config
        )

    key = {"w": weights, **settings, **({"context": context, "stride": stride} if suffix else {})}
    return cached(cell_dir / f"registration{suffix}.json", key, compute)


def _controllability(record: Mapping, cell_dir: Path, settings: Mapping) -> dict:
    """The controllability cell of a dynamics variant's trained stage (see the module docstring)."""
    stage = Path(record["stages"][-1]["root"])
    cfg = settings["controllability"]
    weights = sha256_of(stage_models(stage) / "model.pt")

    def compute() -> dict:
        navigator, regime = trained_navigator(stage), recorded_navigation(stage)
        synth_size = PRESETS[settings["preset"]].get("synth_size")
        items = installed(PROBE_TRAIN + PROBE_TEST)
        real = [items[name] for name in PROBE_TRAIN + PROBE_TEST]
        synthetic = embedded_datalist(cfg["synthetic"], CONTROLLABILITY_SEEDS["volumes"], include_packaged=False)
        figures, seed = {}, CONTROLLABILITY_SEEDS["trajectories"]
        for name, items in {"syn": synthetic, "real": real}.items():
            scores = held_out_controllability(navigator, regime, items, cfg["trajectories"], seed, synth_size)
            figures.update({f"{key}_{name}": value for key, value in scores.items()})
        return figures

    cell = cached(cell_dir / "controllability.json", {"w": weights, **cfg, **CONTROLLABILITY_SEEDS}, compute)
    figures = {
        f"{column}_{data}": cell[f"{key}_{data}"]
        for data in ("syn", "real")
        for column, key in CONTROLLABILITY_COLUMNS.items()
    }
    return {"val_latent_mse": record["stages"][-1]["val_metrics"]["val_latent_mse"], **figures}


def seed_list(seeds: int | Sequence[int]) -> list[int]:
    """The pretraining seeds: ``n`` means seeds ``0 .. n - 1``; a sequence names them (e.g. ``(6, 7, 8)``, to add
    seeds to a run or reuse stage runs of those seeds).

    Raises:
        ValueError: for a count below 1, an empty sequence, a negative or repeated seed.
    """
    if isinstance(seeds, (int, str)):
        if int(seeds) < 1:
            raise ValueError(f"seeds must be a count >= 1 or a list of seeds, got {seeds}.")
        return list(range(int(seeds)))
    chosen = [int(s) for s in seeds]
    if not chosen or min(chosen) < 0 or len(set(chosen)) != len(chosen):
        raise ValueError(f"seeds must be distinct seeds >= 0, got {list(seeds)}.")
    return chosen


def chosen_variants(variants: str | Sequence[str], labelled: bool = True) -> list[str]:
    """The rows to evaluate: ``"all"`` or the named subset of
    :func:`~.variants.evaluated_variants`, checked before anything trains. Without label maps (``labelled`` false:
    pretraining on your own scans), ``"all"`` leaves out the variants that need them, and naming one is refused.

    Raises:
        ValueError: for an empty or unknown choice, or a variant that needs labels when there are none.
    """
    rows = evaluated_variants()
    chosen = list(rows) if variants == "all" else ([variants] if isinstance(variants, str) else list(variants))
    if not chosen:
        raise ValueError(f"variants is empty: give 'all' or a comma-separated subset of {rows}.")
    unknown = [v for v in chosen if v not in rows]
    if unknown:
        raise ValueError(f"variants must be 'all' or among {rows} (unknown: {unknown}).")
    labelled_only = [v for v in chosen if v in VARIANT_TABLE and VARIANT_TABLE[v].needs_labels]
    if labelled_only and not labelled:
        if variants != "all":
            raise ValueError(
                f"{labelled_only} learn from label maps (the synthetic engine) and cannot pretrain on unlabelled "
                "--data; leave them out of --variants."
            )
        logger.warning("%s need label maps and are left out of the comparison on your own scans.", labelled_only)
        chosen = [v for v in chosen if v not in labelled_only]
    return chosen


def evaluate(
    variants: str | Sequence[str] = "all",
    seeds: int | Sequence[int] = 3,
    budget: str = "small",
    out: str | os.PathLike = DEFAULT_OUT,
    data: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
) -> list[dict]:
    """Pretrain and score every variant over ``seeds`` (a count, or the seeds themselves: :func:`seed_list`); write
    ``results.csv``, ``results.md``, ``results.png`` and ``run.json`` (budget, volumes used, package versions) under
    ``out``. With ``data`` (and ``data_root`` for a manifest), every variant pretrains on your own scans (see
    :func:`~.pretrain.pretrain`); the evaluation volumes stay the packaged templates.

    Raises:
        ValueError: for an unknown budget or variant, or bad seeds (see :func:`chosen_variants`, :func:`seed_list`).
        FileNotFoundError: when the packaged evaluation volumes are missing (checked before any pretraining).
    """
    if budget not in BUDGETS:
        raise ValueError(f"budget must be one of {sorted(BUDGETS)}, got {budget!r}.")
    chosen, seeds = chosen_variants(variants, labelled=data is None), seed_list(seeds)
    installed(PROBE_TRAIN + PROBE_TEST)  # every task's volumes are among these: fail now, not after pretraining
    pretraining_data = "embedded synthetic volumes only (include_packaged false)"
    if data is not None:
        described = describe_data(data, data_root or "")
        pretraining_data = (
            f"your own scans: {described['count']} volumes from {data} (sha256 {described['files_sha256'][:12]})"
        )
    settings, out = BUDGETS[budget], Path(out)
    start = time.perf_counter()
    probe_sets = {}
    rows = []
    cells = [(v, s) for s in seeds for v in chosen]
    for variant, seed in tqdm(cells, desc="slicenav evaluate", unit="cell"):
        folder = out / "pretrain" / f"seed{seed}"
        if variant == "random":
            encoder = _random_encoder(folder / "random" / "encoder", settings["preset"], seed)
        else:
            trained = "dynamics_aligned" if variant == "dynamics_untrained" else variant
            record = pretrain(
                trained, settings["steps"], folder / trained, seed=seed, preset=settings["preset"],
                cache_dir=out / "cache", data=data, data_root=data_root,
            )  # fmt: skip
            encoder = Path(record["encoder"])
            if variant == "dynamics_untrained":
                encoder = untrained_trunk(encoder, folder / variant / "encoder", seed)
        row = {"variant": variant, "seed": seed}
        cell_dir = out / "cells" / f"{variant}-seed{seed}"
        row.update(_score(encoder, cell_dir, seed, settings, probe_sets))
        controlled = variant in VARIANT_TABLE and VARIANT_TABLE[variant].controllability
        row.update(_controllability(record, cell_dir, settings) if controlled else _NOT_APPLICABLE)
        rows.append(row)
    reference = _registration(out / "cells" / "intensity_reference", settings["registration"])
    reference["pixels"] = pixel_reference(out, probe_sets, settings["probe"], settings["dense"])
    volumes = {
        "probe_train": PROBE_TRAIN,
        "probe_test": PROBE_TEST,
        "dense_probe": {
            "cases": list(DENSE_PROBE_CASES),
            "both_ways": True,
            "penalty": DENSE_PENALTY,
            "context": DENSE_CONTEXT,
            "context_stride": "the regime's step: recorded max_translation / spacing_mm (dense_probe.regime_stride)",
        },
        "segmentation": "train colin27_brain_aal (+ deformed copies), test mni152_harvard_oxford",
        "registration": REGISTRATION_PAIR,
        "controllability": {  # held-out synthetic volumes and trajectories drawn with these seeds, and real ones
            "synthetic": settings["controllability"]["synthetic"],
            "seeds": CONTROLLABILITY_SEEDS,
            "real": PROBE_TRAIN + PROBE_TEST,
        },
    }
    write_results(out, rows, reference, budget, settings, time.perf_counter() - start, pretraining_data, volumes)
    return rows


_NOT_APPLICABLE = {
    "val_latent_mse": math.nan,
    **{f"{c}_{d}": math.nan for d in ("syn", "real") for c in CONTROLLABILITY_COLUMNS},
}
