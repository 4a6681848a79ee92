"""Benchmark: the tokenizer bundle's training step on this machine.

Builds the bundle's own objects from its stacked training configs (``pretraining.yaml`` + ``train.yaml``,
overridable with ``--override key=value``) and prints, in one process:

* input-pipeline share: time the trainer waits for batches (ignite ``GET_BATCH_STARTED`` -> ``GET_BATCH_COMPLETED``)
  over its wall time, with the bundle's DataLoader and default workers (target <= 25%);
* workflow overhead: MONAI's ``SupervisedTrainer`` over preloaded batches against a bare PyTorch loop (forward, loss,
  backward, step) over the same batches and model, median of interleaved repeats (target <= 1.1x);
* slices per second trained, and how much slower a step runs while the workers synthesise on the same cores.

Run: ``python bench/train_step.py [--iterations 12] [--override num_workers=2]``.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import statistics
import tempfile
import time

import torch
from ignite.engine import Events
from monai.bundle import ConfigParser
from monai.engines import SupervisedTrainer

from monai_slicenav.experiments.pretrain import train_configs
from monai_slicenav.workflows import PrepareSlices


def _literal(text: str):
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def build(bundle_root: str, overrides: dict) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(train_configs("slicenav_tokenizer"))
    parser.update({"bundle_root": bundle_root, **overrides})
    return parser


def make_trainer(parser: ConfigParser, data, network, optimizer, epoch_length: int | None = None) -> SupervisedTrainer:
    """One epoch of the bundle's trainer set-up (batch preparation, loss) over ``data``."""
    return SupervisedTrainer(
        device=parser.get_parsed_content("device"),
        max_epochs=1,
        epoch_length=epoch_length,
        train_data_loader=data,
        network=network,
        optimizer=optimizer,
        loss_function=parser.get_parsed_content("loss"),
        prepare_batch=PrepareSlices("image"),
        decollate=False,
    )


def pipeline_share(parser: ConfigParser, iterations: int) -> tuple[float, float, int]:
    """(share of wall time spent waiting for batches, seconds per iteration, slices per batch)."""
    network, optimizer = parser.get_parsed_content("network"), parser.get_parsed_content("optimizer")
    trainer = make_trainer(parser, parser.get_parsed_content("train#dataloader"), network, optimizer, iterations)
    waits: list[float] = []
    marks: dict[str, float] = {}
    trainer.add_event_handler(Events.GET_BATCH_STARTED, lambda e: marks.__setitem__("start", time.perf_counter()))
    trainer.add_event_handler(Events.GET_BATCH_COMPLETED, lambda e: waits.append(time.perf_counter() - marks["start"]))
    slices: list[int] = []
    # the collated batch, before the trainer decollates it: (B, T, C, h, w) slice stacks
    trainer.add_event_handler(
        Events.ITERATION_STARTED, lambda e: slices.append(e.state.batch["image"].shape[:2].numel())
    )
    start = time.perf_counter()
    trainer.run()
    wall = time.perf_counter() - start
    # the first batch includes worker start-up and the first synthesis: report the steady state
    steady_wall = wall - waits[0]
    return sum(waits[1:]) / steady_wall, steady_wall / (iterations - 1), slices[-1]


def workflow_overhead(parser: ConfigParser, batches: list[dict], repeats: int) -> tuple[float, float]:
    """(median seconds of SupervisedTrainer, of a bare loop) over the same preloaded batches."""
    device = parser.get_parsed_content("device")
    base_network = parser.get_parsed_content("network")
    loss = parser.get_parsed_content("loss")
    prepare = PrepareSlices("image")

    def fresh() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        network = copy.deepcopy(base_network)
        return network, torch.optim.AdamW(network.parameters(), lr=1e-3)

    def ignite_run() -> None:
        make_trainer(parser, batches, *fresh()).run()

    def bare_run() -> None:
        network, optimizer = fresh()
        network.train()
        for batch in batches:
            inputs, targets = prepare(batch, device)
            optimizer.zero_grad()
            loss(network(inputs), targets).backward()
            optimizer.step()

    times: dict[str, list[float]] = {"ignite": [], "bare": []}
    for _ in range(repeats):
        for name, fn in (("ignite", ignite_run), ("bare", bare_run)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return statistics.median(times["ignite"]), statistics.median(times["bare"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=12, help="training iterations measured")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats of the overhead comparison")
    parser.add_argument("--override", action="append", default=[], help="bundle override key=value")
    args = parser.parse_args()
    overrides = {key: _literal(value) for key, _, value in (pair.partition("=") for pair in args.override)}
    with tempfile.TemporaryDirectory() as bundle_root:
        config = build(bundle_root, overrides)
        share, seconds, slices = pipeline_share(config, args.iterations)
        loader = build(bundle_root, {**overrides, "num_workers": 0}).get_parsed_content("train#dataloader")
        batches = list(itertools.islice(loader, 4))
        ignite_s, bare_s = workflow_overhead(config, batches, args.repeats)
    workers = config.get_parsed_content("num_workers")
    print(
        f"tokenizer bundle, {slices} slices per step, {workers} DataLoader workers, {torch.get_num_threads()} threads"
    )
    print(f"  seconds per iteration (steady state)   {seconds:8.3f}")
    print(f"  slices per second trained              {slices / seconds:8.1f}")
    print(f"  input-pipeline share of the step       {100 * share:7.1f} %  (target <= 25 %)")
    print(f"  SupervisedTrainer / bare loop          {ignite_s / bare_s:8.3f}x  (target <= 1.1)")
    print(f"  bare loop, preloaded batches, no workers {bare_s / len(batches):6.3f} s per iteration")
    print(
        f"  step slowdown while workers synthesise {seconds / (bare_s / len(batches)):8.2f}x  (CPU shared with workers)"
    )


if __name__ == "__main__":
    main()
