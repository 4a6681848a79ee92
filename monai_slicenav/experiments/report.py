"""The evaluation report: ``results.csv`` (one row per variant and seed), ``results.md`` (mean ± sd over seeds),
``results.png`` (one bar chart per metric) and ``run.json`` (budget, volumes, versions), written as one unit."""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from .. import __version__
from ..io import atomic_write_files, json_bytes

__all__ = [
    "IN_CONTEXT",
    "PAIRED_METRICS",
    "PIXEL_REFERENCE",
    "paired_lines",
    "results_figure",
    "summary",
    "write_results",
]


def _metrics(rows: Sequence[Mapping]) -> list[str]:
    return [k for k in rows[0] if k not in ("variant", "seed")]


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation over seeds; (nan, nan) for a column that does not apply (all NaN)."""
    if any(math.isnan(v) for v in values):
        return math.nan, math.nan
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summary(rows: Sequence[Mapping]) -> dict[str, dict[str, tuple[float, float]]]:
    """Per variant, per metric: (mean, sd) over the seeds' rows."""
    table: dict[str, dict[str, tuple[float, float]]] = {}
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == variant]
        table[variant] = {m: _mean_sd([float(r[m]) for r in mine]) for m in _metrics(rows)}
    return table


def _per_seed(rows: Sequence[Mapping], variant: str, metric: str) -> dict[int, float]:
    values = {int(r["seed"]): float(r.get(metric, math.nan)) for r in rows if r["variant"] == variant}
    return {seed: value for seed, value in values.items() if not math.isnan(value)}


def _paired(first: Mapping[int, float], second: Mapping[int, float]) -> str | None:
    """``mean ± sd (n seeds)`` of first - second over the seeds both have, and a verdict; None without seeds."""
    seeds = sorted(set(first) & set(second))
    if not seeds:
        return None
    mean, sd = _mean_sd([first[s] - second[s] for s in seeds])
    if len(seeds) < 2:
        return f"{mean:+.3f} (1 seed: no spread)"
    verdict = ("higher" if mean > 0 else "lower") if abs(mean) > 2 * sd else "within 2 sd"
    return f"{mean:+.3f} ± {sd:.3f} ({len(seeds)} seeds: {verdict})"


IN_CONTEXT = {  # a context encoder's read-out in context, and its twin alone
    "dense_dice_ctx": "dense_dice",
    "pose_r2_ctx": "pose_r2_last",
    "gap_r2_ctx": "gap_r2_last",
    "reg_dice_ctx": "reg_dice",
    **{f"seg_dice_n{n}_ctx": f"seg_dice_n{n}" for n in (1, 2, 5)},  # the shots of every budget
}
# in context with the true actions, and with wrong ones: another walk's (pose probe), zero (dense probe)
TRUE_ACTIONS = {"pose_r2_ctx": "pose_r2_ctx_shuffled", "gap_r2_ctx": "gap_r2_ctx_shuffled",
                "dense_dice_ctx": "dense_dice_ctx_still"}  # fmt: skip
WITHIN_ROW = {"in context - alone": IN_CONTEXT, "true - wrong actions": TRUE_ACTIONS}  # paired within one encoder
PAIRED_METRICS = ("dense_dice_ctx", "dense_dice", "pose_r2_ctx", "pose_r2_last", "gap_r2_ctx", "gap_r2_last",
                  "pose_r2", "gap_r2")  # fmt: skip


PIXEL_REFERENCE = {"pose_r2_last": "the same last slices, 8 x 8 mean intensities",
                   "gap_r2_last": "the same pairs, 8 x 8 mean intensities",
                   "dense_dice": "multi-scale in-plane intensity patches"}  # fmt: skip


def paired_lines(rows: Sequence[Mapping], method: str = "dynamics_aligned", pixels: Mapping | None = None) -> list[str]:
    """Paired differences by seed (mean ± sd of the per-seed difference, and whether it exceeds 2 sd): within each
    context encoder what the context adds (:data:`IN_CONTEXT` columns minus their alone twins) and what the true
    actions add to it (:data:`TRUE_ACTIONS`), ``method`` minus every other row on each of :data:`PAIRED_METRICS`
    both have, and ``method`` minus the ``pixels`` reference (no encoder, the same on every seed) on each
    :data:`PIXEL_REFERENCE` metric, alone and in context."""
    lines = ["## Paired differences by seed", "", "| comparison | metric | difference |", "|---|---|---|"]
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    for variant in variants:
        for label, pairs in WITHIN_ROW.items():
            for first, second in pairs.items():
                found = _paired(_per_seed(rows, variant, first), _per_seed(rows, variant, second))
                if found:
                    lines.append(f"| {variant}: {label} | {first} - {second} | {found} |")
    for other in (v for v in variants if v != method):
        for metric in PAIRED_METRICS:
            found = _paired(_per_seed(rows, method, metric), _per_seed(rows, other, metric))
            if found:
                lines.append(f"| {method} - {other} | {metric} | {found} |")
    for metric in PAIRED_METRICS:
        base = IN_CONTEXT.get(metric, metric)
        if pixels and base in PIXEL_REFERENCE and base in pixels:
            mine = _per_seed(rows, method, metric)
            found = _paired(mine, dict.fromkeys(mine, float(pixels[base])))
            if found:
                lines.append(f"| {method} - pixels (reference) | {metric} - pixels' {base} | {found} |")
    return lines if len(lines) > 4 else []


def results_figure(rows: Sequence[Mapping], method: str = "dynamics_aligned") -> bytes:
    """``results.png``: a panel per metric that has data (each seed a point, the mean ± sd a bar beside it), then a
    panel per :data:`PAIRED_METRICS` column of the paired difference ``method`` minus every other row (mean ± sd
    over the seeds both have; the dashed line is no difference)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    variants = list(dict.fromkeys(r["variant"] for r in rows))
    shown = [m for m in _metrics(rows) if any(_per_seed(rows, v, m) for v in variants)]
    paired = {
        metric: {o: _per_seed(rows, method, metric).keys() & _per_seed(rows, o, metric).keys() for o in variants}
        for metric in PAIRED_METRICS
        if method in variants
    }
    paired = {m: {o: seeds for o, seeds in others.items() if seeds and o != method} for m, others in paired.items()}
    paired = {m: others for m, others in paired.items() if others}
    panels = [("metric", m) for m in shown] + [("paired", m) for m in paired]
    columns = min(4, len(panels)) or 1
    figure, axes = plt.subplots(
        -(-len(panels) // columns), columns, figsize=(4.0 * columns, 3.4 * -(-len(panels) // columns)), squeeze=False
    )
    for axis, (kind, metric) in zip(axes.flat, panels, strict=False):
        if kind == "metric":
            for x, variant in enumerate(variants):
                values = list(_per_seed(rows, variant, metric).values())
                if values:
                    mean, sd = _mean_sd(values)
                    axis.plot([x - 0.15] * len(values), values, "o", markersize=3, color="grey")
                    axis.errorbar([x + 0.1], [mean], yerr=[sd], fmt="s", markersize=4, capsize=3)
            axis.set_xticks(range(len(variants)), variants, rotation=60, ha="right", fontsize=7)
            axis.set_title(metric, fontsize=9)
        else:
            others = list(paired[metric])
            for x, other in enumerate(others):
                first, second = _per_seed(rows, method, metric), _per_seed(rows, other, metric)
                mean, sd = _mean_sd([first[s] - second[s] for s in sorted(paired[metric][other])])
                axis.errorbar([x], [mean], yerr=[sd], fmt="o", capsize=3)
            axis.axhline(0.0, linestyle="--", color="grey", linewidth=0.8)
            axis.set_xticks(range(len(others)), others, rotation=60, ha="right", fontsize=7)
            axis.set_title(f"{method} minus row: {metric}", fontsize=9)
    for axis in list(axes.flat)[len(panels) :]:
        axis.set_visible(False)
    figure.tight_layout()
    picture = io.BytesIO()
    figure.savefig(picture, format="png", dpi=100)
    plt.close(figure)
    return picture.getvalue()


def write_results(
    out: Path,
    rows: list[dict],
    reference: Mapping,
    budget: str,
    settings: Mapping,
    seconds: float,
    pretraining_data: str,
    evaluation_volumes: Mapping,
) -> None:
    """Write the report of ``rows`` under ``out`` (see the module docstring); ``reference`` is the intensity
    registration cell, ``evaluation_volumes`` says which volumes each task used."""
    import monai

    metrics, table_of = _metrics(rows), summary(rows)
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=["variant", "seed", *metrics])
    writer.writeheader()
    writer.writerows(rows)
    lines = [
        f"# slicenav evaluate — budget `{budget}`, {len({r['seed'] for r in rows})} seed(s)",
        "",
        f"This invocation took {seconds / 60:.1f} min (finished cells of earlier runs are reused; each cell's own "
        "time is in its JSON under cells/).",
        "",
        "| variant | " + " | ".join(metrics) + " |",
        "|---|" + "---|" * len(metrics),
    ]
    for variant, values in table_of.items():
        cells = ("—" if math.isnan(m) else f"{m:.3f} ± {s:.3f}" for m, s in values.values())
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    lines.append(
        "| reference: intensity registration (LNCC, no encoder) | "
        + " | ".join(f"{reference['mean_dice_after']:.3f}" if m == "reg_dice" else "—" for m in metrics)
        + " |"
    )
    pixels = {m: float(reference["pixels"][m]) for m in PIXEL_REFERENCE if m in reference["pixels"]}
    lines.append(
        f"| reference: pixels ({'; '.join(f'{m}: {PIXEL_REFERENCE[m]}' for m in pixels)}) | "
        + " | ".join(f"{pixels[m]:.3f}" if m in pixels else "—" for m in metrics)
        + " |"
    )
    lines += [
        "",
        "Higher is better in the task columns (R^2 of spatial probes, mean Dice); `_w16` columns: the probe on the "
        "encoder's features narrowed to 16 principal components, an equal feature count for every encoder. "
        "`pose_r2_last`: the pose probe of the last slice of walks in the pretraining regime from its features "
        "alone; `pose_r2_ctx` (context encoders): the same slice's features in the context of the 7 slices and "
        "actions before it; their difference is what the context adds; `pose_r2_ctx_shuffled`: the same with each walk "
        "given another walk's actions, so `pose_r2_ctx - pose_r2_ctx_shuffled` is what the true actions add. "
        "`gap_r2_last`, `gap_r2_ctx`, `gap_r2_ctx_shuffled`: the same for the relative pose between the slice 4 "
        "steps before the last and the last, from the two slices' features (in context, the true actions carry "
        "that relative pose: the shuffled twin says how much of it the features read out). "
        "`dense_dice`: the primary metric, a linear "
        "voxel classifier of the five Harvard-Oxford lobes on the frozen lifted features, fitted on MNI152 and "
        "scored on ICBM 2009c and the other way round, averaged (one labelling on both sides, deterministic given "
        "the encoder); `dense_dice_ctx` (context encoders): the same with each slice seen after the slices before "
        "it and the true actions between them (causal context); `dense_dice_ctx_still`: that context with zero "
        "actions, so `dense_dice_ctx - dense_dice_ctx_still` is what the true actions add; "
        "`reg_dice_ctx` the feature registration and `seg_dice_n*_ctx` the few-shot segmentation with that context "
        "at the regime's step. "
        "Controllability (dynamics variants; `_syn` held-out synthetic, `_real` the four real templates): "
        "`ctrl_true_copy` next-step latent error with the true actions over the copy baseline and "
        "`ctrl_true_shuffled` over shuffled actions (lower is better, 1: no use of the actions), `ctrl_true_warp` "
        "over the in-plane warp of the current slice (below 1: better than the simplest use of the action), "
        "`ctrl_gap_db` decoded PSNR with true minus shuffled actions (higher is better; 0 for `dynamics_none` by "
        "construction); `val_latent_mse` the dynamics stage's validation loss (lower is better). "
        f"Registration Dice before registering: {reference['mean_dice_before']:.3f}. "
        "dynamics_untrained is a control (stage-1 tokenizer, untrained dynamics trunk).",
    ]
    paired = paired_lines(rows, pixels=pixels)
    lines += ["", *paired] if paired else []
    picture = results_figure(rows)
    record = {
        "budget": budget,
        "settings": settings,
        "wall_s": round(seconds, 1),
        "intensity_registration_reference": {k: reference[k] for k in ("mean_dice_before", "mean_dice_after")},
        "pixel_probe_reference": reference["pixels"],
        "pretraining_data": pretraining_data,
        "evaluation_volumes": dict(evaluation_volumes),
        "versions": {"monai_slicenav": __version__, "monai": monai.__version__, "torch": torch.__version__},
    }
    atomic_write_files(
        {
            out / "results.csv": table.getvalue().encode(),
            out / "results.md": ("\n".join(lines) + "\n").encode(),
            out / "results.png": picture,
            out / "run.json": json_bytes(record),
        }
    )
