"""Does a trained stage-2 model use its actions? Controllability figures of a trained dynamics stage on held-out
synthetic volumes and on the packaged real templates, with trajectories of the regime it was trained with.

    python bench/controllability.py runs/aligned              # a `slicenav pretrain dynamics_*` output folder
    python bench/controllability.py bundles/slicenav_dynamics  # or a trained dynamics bundle root

Printed per data set: next-step latent MSE with the true actions, a derangement of them (shuffled) and zero
actions, each as a ratio to the copy baseline (z_t+1 = z_t; below 1 beats copying), the in-plane warp reference
(the current slice warped by the action's in-plane part, encoded), true / shuffled, and the decoded PSNR of the
predicted next slice with true and shuffled actions and their gap in dB. The baseline of every ratio is the copy
baseline measured on the same trajectories in the same run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from overrides import override

from monai_slicenav.data import embedded_datalist
from monai_slicenav.data.packaged import packaged_pairs
from monai_slicenav.workflows import recorded_navigation, stage_models, trained_navigator
from monai_slicenav.workflows.controllability import held_out_controllability

COLUMNS = (
    ("true/copy", "ctrl_ratio_true_copy"),
    ("shuffled/copy", "ctrl_ratio_shuffled_copy"),
    ("zero/copy", "ctrl_ratio_zero_copy"),
    ("warp/copy", "ctrl_ratio_warp_copy"),
    ("true/shuffled", "ctrl_ratio_true_shuffled"),
    ("true/warp", "ctrl_ratio_true_warp"),
    ("PSNR true", "ctrl_psnr_true"),
    ("PSNR shuffled", "ctrl_psnr_shuffled"),
    ("gap dB", "ctrl_psnr_gap_db"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", type=Path)
    parser.add_argument("--synthetic", type=int, default=4, help="held-out synthetic volumes (seed 1000)")
    parser.add_argument("--real", type=int, default=4, help="packaged real templates (0: none)")
    parser.add_argument("--trajectories", type=int, default=16, help="trajectories per volume")
    parser.add_argument("--synth_size", type=int, default=None, help="default: the stage's own")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--regime",
        nargs="*",
        default=[],
        type=override,
        metavar="KEY=VALUE",
        help="change the recorded regime (VALUE read as YAML), e.g. scroll_probability=0 to compare models trained "
        "with scroll trajectories on the walks of the default regime",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    regime, navigator = {**recorded_navigation(args.stage), **dict(args.regime)}, trained_navigator(args.stage)
    stage_record = stage_models(args.stage).parent / "stage.json"  # slicenav pretrain's record of the stage
    synth_size = json.loads(stage_record.read_text())["overrides"].get("synth_size") if stage_record.is_file() else None
    data = {"held-out synthetic": embedded_datalist(args.synthetic, 1000, include_packaged=False)}
    if args.real:
        data["packaged real"] = packaged_pairs()[: args.real]
    print(f"regime: {regime}")
    print("| data | " + " | ".join(name for name, _ in COLUMNS) + " |")
    print("|---|" + "---|" * len(COLUMNS))
    for name, items in data.items():
        if not items:
            print(f"| {name} | (none installed) |")
            continue
        figures = held_out_controllability(
            navigator, regime, items, args.trajectories, 0, args.synth_size or synth_size
        )
        print(f"| {name} ({len(items)} volumes) | " + " | ".join(f"{figures[key]:.3f}" for _, key in COLUMNS) + " |")


if __name__ == "__main__":
    main()
