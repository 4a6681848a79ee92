"""Benchmark: planning success of goal-directed navigation (``monai_slicenav.planning``).

Episodes from random start poses to goals ``--goal_steps`` steps of the pretraining regime away (``--goals walk``)
or to the named planes (``--goals planes``: the axial, coronal and sagittal plane through the centre of the head,
from a start ``--goal_steps`` random regime steps away from it), on the packaged real templates (``--data real``,
every distinct head image; none of them is seen in pretraining) or on synthetic volumes (``--data synthetic``).
Success: the final slice centre within 4 mm of the goal's and its normal within 10 degrees. Planners, each with its
``planning.SEARCH`` settings and on the same episodes: the true renderer as the model (the upper bound), random
actions in the regime (the floor), the in-plane warp of the last slice as the model (no learning; compared in the
latents of each seed's first model), and trained stage-2 models: ``--runs DIR`` finds every
``seed<k>/dynamics_<name>`` pretraining folder under DIR (a ``slicenav evaluate`` or ``bench/context_probe.py``
output), ``--models LABEL=RUN`` names them one by one (``RUN``: a ``slicenav pretrain`` folder or a dynamics stage
root; its seed is read from the stage's recorded hyper-parameters). With ``--diagnose`` every model also gets the
true renderer planning in that model's latent space (its cost, exact imagination), which tells a cost that cannot
guide from imagination that cannot.

Prints per planner the success rate and the median final distance and angle (mean ± sd over pretraining seeds for
the trained models), the paired differences by seed of the first variant against every other planner, and the
planning cost (model calls and seconds per re-plan and per episode); ``--out FILE`` writes every episode's result.

Run: ``python bench/planning.py --runs runs/comparison --episodes 50 --workers 2``.
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from monai_slicenav.data import packaged_pairs
from monai_slicenav.encoders import recorded_navigation, stage_models, trained_navigator
from monai_slicenav.geometry import Pose, apply_action
from monai_slicenav.io import atomic_write_json, read_json_object
from monai_slicenav.planning import (
    SEARCH,
    STANDARD_PLANES,
    NavigatorModel,
    RendererModel,
    WarpModel,
    action_bounds,
    plan,
    pose_error,
    render_goal,
    standard_plane,
)
from monai_slicenav.transforms import EmbeddedVolumed, RandSliceTrajectory, RandSynthAppearance, SynthLabelEnsemble

SUCCESS_MM, SUCCESS_DEGREES = 4.0, 10.0
RENDERER, RANDOM = "true renderer (upper bound)", "random actions"
WARP = "in-plane warp (no learning)"  # planned in the latents of each seed's first model, with the models' search
STEPS = 10  # most actions an episode executes
FLOOR_SEED = 10_000  # the random floor's actions: a stream apart from the named-plane episodes' starts (seeds 0..)


@dataclass(frozen=True)
class Episode:
    """One planning task: a start and a goal pose on head ``head``; ``goal_name`` is ``"walk"`` or a named plane."""

    head: int
    start: Pose
    goal: Pose
    goal_name: str


def synthetic_heads(count: int, size: int = 64) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` seeded synthetic volumes as (image, foreground) pairs (held out: seeds 1000 and up)."""
    paint = RandSynthAppearance(corruption_prob=0.0)
    paint.set_random_state(0)
    labels = [SynthLabelEnsemble(spatial_size=size)(1000 + k) for k in range(count)]
    return [(paint(label), label) for label in labels]


def real_heads() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every distinct head image of the packaged templates, loaded as pretraining loads volumes, with its label map
    (whose foreground bounds the episodes, as in the controllability figures on real volumes).

    Raises:
        FileNotFoundError: when no packaged template is installed.
    """
    items = list({item["image"]: item for item in packaged_pairs()}.values())
    if not items:
        raise FileNotFoundError("no packaged template installed: pip install 'monai_slicenav[data]' and mricron-data")
    loaded = [EmbeddedVolumed()(dict(item)) for item in items]
    return [(d["image"], d["label"]) for d in loaded]


def episodes(
    heads: Sequence[tuple[torch.Tensor, torch.Tensor]], count: int, goal_steps: int, goals: str, regime: dict
) -> list[Episode]:
    """``count`` seeded episodes, cycling over ``heads``: a random start and the pose ``goal_steps`` regime steps
    later (``goals="walk"``), or a named plane and a start ``goal_steps`` uniform random regime steps away from it
    (``goals="planes"``)."""
    sampler = RandSliceTrajectory(goal_steps, **{**regime, "start_orientation": "random"})
    made = []
    for k in range(count):
        head = k % len(heads)
        image, foreground = heads[head]
        if goals == "walk":
            sampler.set_random_state(k)
            poses, _ = sampler(foreground)
            made.append(Episode(head, poses[0].to(dtype=torch.float64), poses[-1].to(dtype=torch.float64), "walk"))
        else:
            name = STANDARD_PLANES[k % len(STANDARD_PLANES)]
            goal = standard_plane(foreground.float(), name, regime["spatial_size"], threshold=0.0)
            made.append(Episode(head, random_walk(goal, goal_steps, torch.Generator().manual_seed(k)), goal, name))
    return made


def random_walk(start: Pose, steps: int, generator: torch.Generator) -> Pose:
    """``steps`` uniform random actions inside the regime's bounds from ``start``: the floor, and the named-plane
    episodes' starts."""
    pose, bounds = start.to(dtype=torch.float64), action_bounds()
    for _ in range(steps):
        pose = apply_action(pose, ((torch.rand(7, generator=generator) * 2 - 1) * bounds).double())
    return pose


class RendererInLatents(RendererModel):
    """The diagnostic planner: imagines exactly (renders) but compares slices in a trained model's latent space."""

    def __init__(self, volume: torch.Tensor, spatial_size: int, model: NavigatorModel) -> None:
        super().__init__(volume, spatial_size)
        self.model = model

    def latents(self, slices: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model.latents(slices.float()).flatten(1)


def find_runs(root: Path, variants: Sequence[str] | None) -> dict[str, Path]:
    """``{"<variant>=<folder>": folder}`` of every ``seed<k>/dynamics_<variant>`` pretraining folder under ``root``
    (``variants``: only these)."""
    found = {}
    for record in sorted(root.glob("**/seed*/dynamics_*/pretrain.json")):
        folder = record.parent
        if variants is None or folder.name in variants:
            found[f"{folder.name}={folder}"] = folder
    if not found:
        raise FileNotFoundError(f"{root}: no seed<k>/dynamics_<variant>/pretrain.json under it.")
    return found


def run_seed(run: Path) -> int:
    """The pretraining seed a dynamics run recorded (its stage's ``models/training.json``)."""
    return int(read_json_object(stage_models(run) / "training.json")["hyperparameters"]["seed"])


_STATE: dict = {}
IN_LATENTS = " in latents"  # the diagnostic planner of a model: the renderer, compared in that model's latents


def _setup(heads: list, runs: dict[str, Path], warps: dict[str, str], size: int, goal_steps: int) -> None:
    """A worker's volumes and models (``warps``: the in-plane warp planner's label -> the run whose latents it
    compares in), loaded once."""
    torch.set_num_threads(1)
    models = {label: NavigatorModel(trained_navigator(run)) for label, run in runs.items()}
    models.update({label: WarpModel(models[run].navigator) for label, run in warps.items()})
    _STATE.update(heads=heads, size=size, goal_steps=goal_steps, models=models)


def _play(task: tuple[str, int, Episode]) -> dict:
    """One planner on one episode: the final pose error, the re-plans, model calls and seconds."""
    planner, index, episode = task
    image, size = _STATE["heads"][episode.head][0], _STATE["size"]
    row = {"planner": planner, "episode": index, "goal": episode.goal_name, "seconds": 0.0, "replans": 0,
           "model_calls": 0}  # fmt: skip
    if planner == RANDOM:
        reached = random_walk(episode.start, _STATE["goal_steps"], torch.Generator().manual_seed(FLOOR_SEED + index))
        return {**row, **_errors(reached, episode.goal)}
    if planner == RENDERER:
        model, kind = RendererModel(image, size), "renderer"
    elif planner.endswith(IN_LATENTS):
        model, kind = RendererInLatents(image, size, _STATE["models"][planner.removesuffix(IN_LATENTS)]), "renderer"
    else:
        model, kind = _STATE["models"][planner], "model"
    began = time.perf_counter()
    goal = render_goal(image, episode.goal, size)
    result = plan(image, episode.start, goal, model, steps=STEPS, seed=index, **SEARCH[kind])
    row.update(seconds=time.perf_counter() - began, replans=len(result.actions), model_calls=result.model_calls)
    return {**row, **_errors(result.poses[-1], episode.goal)}


def _errors(reached: Pose, goal: Pose) -> dict[str, float]:
    distance, angle = pose_error(reached, goal)
    return {"distance": distance, "angle": angle}


def success(rows: Sequence[dict]) -> float:
    """Share of ``rows`` within the success thresholds."""
    return sum(r["distance"] < SUCCESS_MM and r["angle"] < SUCCESS_DEGREES for r in rows) / len(rows)


def _mean_sd(values: Sequence[float], scale: float = 1.0, unit: str = "") -> str:
    mean = statistics.mean(values) * scale
    if len(values) < 2:
        return f"{mean:.1f}{unit}"
    return f"{mean:.1f}{unit} ± {statistics.stdev(values) * scale:.1f}{unit}"


def _median_distance(rows: Sequence[dict]) -> float:
    return statistics.median(r["distance"] for r in rows)


FIXED = -1  # the seed key of the planners that do not depend on pretraining (renderer, random actions)


def grouped(results: Sequence[dict], seeds: dict[str, int]) -> dict[str, dict[int, list[dict]]]:
    """``{name: {pretraining seed: rows}}``: a trained model's runs grouped by their label (``LABEL=RUN``), its
    diagnostic planners apart; the renderer and random actions under :data:`FIXED`."""
    groups: dict[str, dict[int, list[dict]]] = {}
    for row in results:
        planner = row["planner"]
        model = planner.removesuffix(IN_LATENTS)
        name = model.partition("=")[0] + (" (true renderer in its latents)" if planner != model else "")
        groups.setdefault(name, {}).setdefault(seeds.get(model, FIXED), []).append(row)
    return groups


def report(results: Sequence[dict], seeds: dict[str, int], lead: str | None = None) -> list[str]:
    """The table (one row per planner; a trained variant as mean ± sd over its pretraining seeds) and ``lead``'s
    (default: the first trained variant) paired differences by seed against every other planner."""
    groups = grouped(results, seeds)
    lines = [
        "| planner | seeds | success (4 mm, 10 deg) | median distance mm | median angle deg | re-plans | "
        "model calls per re-plan | s per re-plan | s per episode |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, per_seed in groups.items():
        every = [r for rows in per_seed.values() for r in rows]
        replans = sum(r["replans"] for r in every)
        calls, seconds = sum(r["model_calls"] for r in every), sum(r["seconds"] for r in every)
        cost = f"{calls / replans:.0f} | {seconds / replans:.2f}" if replans else "— | —"
        lines.append(
            f"| {name} | {'—' if FIXED in per_seed else len(per_seed)} | "
            f"{_mean_sd([success(rows) for rows in per_seed.values()], 100, '%')} | "
            f"{_mean_sd([_median_distance(rows) for rows in per_seed.values()])} | "
            f"{_mean_sd([statistics.median(r['angle'] for r in rows) for rows in per_seed.values()])} | "
            f"{replans / len(every):.1f} | {cost} | {seconds / len(every):.2f} |"
        )
    trained = [name for name, per_seed in groups.items() if FIXED not in per_seed and "(" not in name]
    lead = lead if lead in trained else (trained[0] if trained else None)
    if lead is None:
        return lines
    lines += ["", f"Paired by seed ({lead} minus each; mean ± sd over seeds; * beyond 2 sd):"]
    for other in (n for n in groups if n != lead):
        for metric, measure, scale in (("success %", success, 100), ("median distance mm", _median_distance, 1)):
            pairs = [
                (measure(rows) - measure(groups[other].get(seed, groups[other].get(FIXED)))) * scale
                for seed, rows in groups[lead].items()
                if seed in groups[other] or FIXED in groups[other]
            ]
            if pairs:
                mean, sd = statistics.mean(pairs), statistics.stdev(pairs) if len(pairs) > 1 else float("nan")
                verdict = " *" if abs(mean) > 2 * sd else ""
                lines.append(f"- {lead} - {other}, {metric}: {mean:+.1f} ± {sd:.1f}{verdict} ({len(pairs)} seeds)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=24)
    parser.add_argument("--goal_steps", type=int, default=3)
    parser.add_argument("--goals", default="walk", choices=("walk", "planes"))
    parser.add_argument("--data", default="real", choices=("real", "synthetic"))
    parser.add_argument("--slice_size", type=int, default=None, help="without models (default 32); else recorded")
    parser.add_argument("--runs", type=Path, default=None, help="plan with every seed<k>/dynamics_* run under it")
    parser.add_argument("--variants", nargs="*", default=None, help="with --runs: only these (first: paired)")
    parser.add_argument("--models", nargs="*", default=[], help="LABEL=RUN trained stage-2 runs to plan with")
    parser.add_argument("--diagnose", action="store_true", help="also plan with the renderer in each model's latents")
    parser.add_argument("--workers", type=int, default=1, help="processes, one thread each")
    parser.add_argument("--out", type=Path, default=None, help="write every episode's result (JSON)")
    args = parser.parse_args()
    runs = find_runs(args.runs, args.variants) if args.runs else {}
    if args.runs and args.variants:  # the first variant named leads the table and the paired differences
        runs = dict(sorted(runs.items(), key=lambda item: args.variants.index(item[1].name)))
    for entry in args.models:
        label, sep, path = entry.partition("=")
        if not sep:
            parser.error(f"--models {entry}: give LABEL=RUN")
        runs[entry] = Path(path)
    regimes = [recorded_navigation(run) for run in runs.values()]
    if any(r["spatial_size"] != regimes[0]["spatial_size"] for r in regimes):
        parser.error("the models were trained on slices of different sizes; plan with one size at a time")
    accepted = inspect.signature(RandSliceTrajectory).parameters
    regime = {k: v for k, v in (regimes[0] if regimes else {}).items() if k in accepted and k != "num_steps"}
    size = regime.get("spatial_size", args.slice_size or 32)
    regime["spatial_size"] = size = int(size if isinstance(size, int) else size[0])
    seeds = {label: run_seed(run) for label, run in runs.items()}
    lead = next(iter(runs), "").partition("=")[0]
    warps = {f"{WARP}={run}": label for label, run in runs.items() if label.partition("=")[0] == lead}
    seeds.update({label: seeds[run] for label, run in warps.items()})
    heads = real_heads() if args.data == "real" else synthetic_heads(4)
    plays = episodes(heads, args.episodes, args.goal_steps, args.goals, regime)
    diagnostic = [f"{label}{IN_LATENTS}" for label in runs] if args.diagnose else []
    planners = [RENDERER, *runs, *warps, *diagnostic, RANDOM]
    tasks = [(planner, k, episode) for k, episode in enumerate(plays) for planner in planners]
    starts = [pose_error(episode.start, episode.goal) for episode in plays]
    print(f"{len(plays)} episodes on {len(heads)} {args.data} heads, goals: {args.goals} {args.goal_steps} regime "
          f"steps away (median start {statistics.median(d for d, _ in starts):.1f} mm, "
          f"{statistics.median(a for _, a in starts):.1f} deg from the goal), {size}^2 slices; {len(tasks)} plans "
          f"on {args.workers} worker(s)", flush=True)  # fmt: skip
    began, results = time.perf_counter(), []
    setup = (heads, runs, warps, size, args.goal_steps)
    with ProcessPoolExecutor(args.workers, initializer=_setup, initargs=setup) as pool:
        for done, row in enumerate(pool.map(_play, tasks, chunksize=1), 1):
            results.append(row)
            if done % max(1, len(tasks) // 20) == 0:
                print(f"  {done}/{len(tasks)} plans, {time.perf_counter() - began:.0f} s", flush=True)
    print("\n".join(report(results, seeds, args.variants[0] if args.variants else None)))
    if args.out:
        arguments = {k: v if isinstance(v, int | str | list | None) else str(v) for k, v in vars(args).items()}
        atomic_write_json(args.out, {"results": results, "seeds": seeds, "arguments": arguments})


if __name__ == "__main__":
    main()
