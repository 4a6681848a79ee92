"""Aligned vs none vs shuffled actions: the dynamics stage's next-step latent error on held-out trajectories after
the same budget, over several seeds, and its training speed.

    python bench/dynamics_ablation.py --steps 400 --seeds 0 1 2 --preset small --out /tmp/slicenav_ablation

Every seed trains one stage-1 tokenizer (half the steps) shared by the three variants, then each variant's dynamics
stage (the other half) through ``monai_slicenav.experiments.pretrain``. The metric is the dynamics bundle's validation
``val_latent_mse`` (FSQ codes in [-1, 1]; held-out synthetic volumes drawn with seed + 1, each variant under its
own action regime). The baseline named in the ratios is ``dynamics_aligned`` of the same seed.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from monai_slicenav.experiments.pretrain import pretrain
from monai_slicenav.experiments.variants import dynamics_variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--out", default="/tmp/slicenav_ablation")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    rows = []
    for seed in args.seeds:
        for variant in dynamics_variants():
            record = pretrain(
                variant,
                args.steps,
                out / f"seed{seed}" / variant,
                seed=seed,
                preset=args.preset,
                cache_dir=out / "cache",
                extra_overrides={"num_workers": 0},
            )
            dynamics = record["stages"][1]
            rows.append(
                {
                    "seed": seed,
                    "variant": variant,
                    "val_latent_mse": dynamics["val_metrics"]["val_latent_mse"],
                    "steps_per_s": dynamics["steps_per_s"],
                    "tokenizer_val_psnr": record["stages"][0]["val_metrics"].get("val_psnr"),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{args.steps} steps per variant (half tokenizer, half dynamics), preset {args.preset}")
    print(f"{'variant':<20}{'val_latent_mse mean +- sd':>28}{'ratio to aligned':>18}{'dyn steps/s':>13}")
    aligned = {r["seed"]: r["val_latent_mse"] for r in rows if r["variant"] == "dynamics_aligned"}
    for variant in dynamics_variants():
        mine = [r for r in rows if r["variant"] == variant]
        errors = [r["val_latent_mse"] for r in mine]
        ratios = [r["val_latent_mse"] / aligned[r["seed"]] for r in mine]
        spread = statistics.stdev(errors) if len(errors) > 1 else 0.0
        speed = statistics.median(r["steps_per_s"] for r in mine)
        print(
            f"{variant:<20}{statistics.mean(errors):>18.4f} +- {spread:.4f}"
            f"{statistics.mean(ratios):>18.3f}{speed:>13.2f}"
        )
    (out / "ablation.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
