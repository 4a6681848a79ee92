"""Few-shot segmentation Dice (n = 1, 2, 5; random initialisation vs a pretrained encoder) and registration Dice and
folding (encoder features vs intensities) on the packaged volumes, with CPU wall times.

    python bench/downstream_figures.py --encoder runs/aligned/slice_encoder --out /tmp/slicenav_downstream

Segmentation runs the slicenav_segmentation bundle through ConfigWorkflow (train, then evaluate.yaml);
registration runs monai_slicenav.downstream.registration_run.compare_similarities on the default pairs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from monai_slicenav.downstream.registration import RegistrationConfig
from monai_slicenav.downstream.registration_run import compare_similarities
from monai_slicenav.experiments.evaluate import segmentation_dice


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", required=True, help="an exported encoder folder")
    parser.add_argument("--out", default="/tmp/slicenav_downstream")
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 2, 5])
    parser.add_argument("--spacing", type=float, default=3.0)
    parser.add_argument("--skip_segmentation", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    settings = {
        "spacing_mm": args.spacing,
        "roi_size": 48,
        "samples_per_volume": 2,
        "max_epochs": 4,
        "epoch_length": 10,
    }
    settings["val_interval"] = settings["max_epochs"]
    rows = []
    if not args.skip_segmentation:
        for n in args.shots:
            for name, encoder in (("random", ""), ("pretrained", args.encoder)):
                start = time.perf_counter()
                dice = segmentation_dice(encoder, out / f"seg_{name}_n{n}", n, settings)
                rows.append(
                    {
                        "task": "segmentation",
                        "n": n,
                        "init": name,
                        "mean_dice": dice,
                        "seconds": round(time.perf_counter() - start, 1),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    records = compare_similarities(out / "registration", args.encoder, 2.0, RegistrationConfig())
    for r in records:
        rows.append(
            {
                "task": "registration",
                "pair": r["pair"],
                "similarity": r["similarity"],
                "dice_before": r["mean_dice_before"],
                "dice_after": r["mean_dice_after"],
                "folding": r["negative_jacobian_fraction"],
                "seconds": r["seconds"],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    (out / "downstream.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
