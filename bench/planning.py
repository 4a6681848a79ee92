"""Benchmark: planning success of goal-directed navigation (``monai_slicenav.planning``).

Episodes from random start poses to goals ``--goal_steps`` steps of the pretraining regime away on synthetic
volumes (seeded); success = the final slice centre within 4 mm of the goal's and its normal within 10 degrees.
Planners (each with its ``planning.SEARCH`` settings): the true renderer as the model (the upper bound), random
actions in the regime (the floor), and every trained stage-2 model given with ``--models`` (a ``slicenav pretrain``
output folder or a dynamics stage root, rebuilt by ``trained_navigator``). With ``--diagnose``, each model also
gets the true renderer planning in that model's latent space (its cost, exact imagination), which tells a cost that
cannot guide from imagination that cannot. Prints success rate, median final error and seconds per episode.

Run: ``python bench/planning.py [--episodes 24] [--models runs/aligned runs/shuffled runs/none] [--diagnose]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from monai_slicenav.geometry import Pose, apply_action
from monai_slicenav.planning import (
    SEARCH,
    NavigatorModel,
    RendererModel,
    action_bounds,
    plan,
    pose_error,
    render_goal,
)
from monai_slicenav.transforms import RandSliceTrajectory, RandSynthAppearance, SynthLabelEnsemble

SUCCESS_MM, SUCCESS_DEGREES = 4.0, 10.0


def volumes(count: int, size: int) -> list[torch.Tensor]:
    paint = RandSynthAppearance(corruption_prob=0.0)
    paint.set_random_state(0)
    return [paint(SynthLabelEnsemble(spatial_size=size)(1000 + k)) for k in range(count)]


class RendererInLatents(RendererModel):
    """The diagnostic planner: imagines exactly (renders) but compares slices in a trained model's latent space."""

    def __init__(self, volume: torch.Tensor, spatial_size: int, model: NavigatorModel) -> None:
        super().__init__(volume, spatial_size)
        self.model = model

    def latents(self, slices: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model.latents(slices.float()).flatten(1)


def random_walk(start: Pose, steps: int, generator: torch.Generator) -> Pose:
    """The floor: ``steps`` uniform random actions inside the regime's bounds."""
    pose, bounds = start.to(dtype=torch.float64), action_bounds()
    for _ in range(steps):
        pose = apply_action(pose, ((torch.rand(7, generator=generator) * 2 - 1) * bounds).double())
    return pose


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=24)
    parser.add_argument("--goal_steps", type=int, default=3)
    parser.add_argument("--slice_size", type=int, default=32)
    parser.add_argument("--models", nargs="*", default=[], help="trained stage-2 runs to plan with")
    parser.add_argument("--diagnose", action="store_true", help="also plan with the renderer in each model's latents")
    args = parser.parse_args()
    heads = volumes(4, 64)
    sampler = RandSliceTrajectory(args.goal_steps, args.slice_size, start_orientation="random")
    planners = {"true renderer (upper bound)": (lambda volume: RendererModel(volume, args.slice_size), "renderer")}
    for path in args.models:
        from monai_slicenav.workflows import trained_navigator

        navigator = trained_navigator(path)
        model = NavigatorModel(navigator)
        planners[f"model {path}"] = (lambda volume, model=model: model, "model")
        if args.diagnose:
            diagnostic = (lambda volume, model=model: RendererInLatents(volume, args.slice_size, model), "renderer")
            planners[f"true renderer, latents of {path}"] = diagnostic
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in [*planners, "random actions"]}
    for episode in range(args.episodes):
        volume = heads[episode % len(heads)]
        sampler.set_random_state(episode)
        poses, _ = sampler(volume)
        start, goal = poses[0], poses[-1]
        image = render_goal(volume, goal, args.slice_size)
        for name, (make, kind) in planners.items():
            began = time.perf_counter()
            result = plan(volume, start, image, make(volume), steps=10, seed=episode, **SEARCH[kind])
            results[name].append((*pose_error(result.poses[-1], goal), time.perf_counter() - began))
        reached = random_walk(start, args.goal_steps, torch.Generator().manual_seed(episode))
        results["random actions"].append((*pose_error(reached, goal), 0.0))
    print(f"{args.episodes} episodes, goals {args.goal_steps} steps of the pretraining regime away")
    print("| planner | success (4 mm, 10 deg) | median distance mm | median angle deg | s per episode |")
    print("|---|---|---|---|---|")
    for name, rows in results.items():
        success = sum(d < SUCCESS_MM and a < SUCCESS_DEGREES for d, a, _ in rows) / len(rows)
        print(
            f"| {name} | {success:.0%} | {statistics.median(r[0] for r in rows):.1f} | "
            f"{statistics.median(r[1] for r in rows):.1f} | {statistics.mean(r[2] for r in rows):.2f} |"
        )


if __name__ == "__main__":
    main()
