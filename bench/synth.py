"""Benchmark: the synthetic data engine on one core, and how many DataLoader workers keep training fed.

Prints medians (one process, ``torch.set_num_threads(1)`` for the data side, as in a DataLoader worker) of:

* one 128^3 label map generated from its seed, and read back from the disk cache;
* one two-view appearance (GMM + MONAI corruptions) and one navigation sample (trajectory + rendering of both
  views, T + 1 slices of 128^2);
* a proxy training step: MONAI's 2D ``AutoEncoder`` forward + backward on the slices of a batch (the tokenizer
  of stage 1 replaces it once it lands), with the machine's default threads;

and the ratio ``workers needed = batch x sample time / step time`` (target: 2 on a 2-core machine), also when each
synthesised volume gives ``--per-volume`` trajectories (``RandSliceTrajectoryd(num_samples=...)``).

Run: ``python bench/synth.py [--size 128] [--steps 15] [--batch 2] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from collections.abc import Callable

import torch
from monai.networks.nets import AutoEncoder
from monai.transforms import Compose

from monai_slicenav.data import embedded_datalist
from monai_slicenav.transforms import RandSliceTrajectoryd, RandSynthAppearanced, RenderSlicesd, SynthLabelEnsembled


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128, help="synthetic volume edge in voxels (1 mm)")
    parser.add_argument("--steps", type=int, default=15, help="trajectory actions T (T + 1 slices)")
    parser.add_argument("--batch", type=int, default=2, help="volumes per training step")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs (median reported)")
    parser.add_argument(
        "--per-volume",
        type=int,
        default=4,
        help="trajectories per synthesised volume (RandSliceTrajectoryd num_samples)",
    )
    args = parser.parse_args()
    default_threads = torch.get_num_threads()
    items = embedded_datalist(args.repeats + 1, seed=0)

    torch.set_num_threads(1)
    label_only = SynthLabelEnsembled("label", spatial_size=args.size)
    appearance = RandSynthAppearanced(("image", "image_view2")).set_random_state(0)
    navigation = Compose(
        [
            RandSliceTrajectoryd("label", num_steps=args.steps, spatial_size=128),
            RenderSlicesd(("image", "image_view2", "label"), 128, mode=("bilinear", "bilinear", "nearest")),
        ]
    ).set_random_state(0)
    samples = iter(items)
    t_label = median_seconds(lambda: label_only(next(samples)), args.repeats)
    labelled = label_only(items[0])
    t_views = median_seconds(lambda: appearance(labelled), args.repeats)
    painted = appearance(labelled)
    t_navigation = median_seconds(lambda: navigation(painted), args.repeats)
    with tempfile.TemporaryDirectory() as cache_dir:
        cached = SynthLabelEnsembled("label", spatial_size=args.size, cache_dir=cache_dir)
        cached(items[0])
        t_cached = median_seconds(lambda: cached(items[0]), args.repeats)

    torch.set_num_threads(default_threads)
    model = AutoEncoder(spatial_dims=2, in_channels=1, out_channels=1, channels=(32, 64, 128), strides=(2, 2, 2))
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)
    slices = torch.rand(args.batch * (args.steps + 1), 1, 128, 128)

    def train_step() -> None:
        optimizer.zero_grad()
        torch.nn.functional.l1_loss(model(slices), slices).backward()
        optimizer.step()

    train_step()
    t_step = median_seconds(train_step, args.repeats)

    t_sample = t_label + t_views + t_navigation
    t_sample_cached = t_cached + t_views + t_navigation
    print(f"synthetic {args.size}^3, two views, {args.steps + 1} slices of 128^2; data side on 1 thread")
    print(f"  label map from seed        {1000 * t_label:9.1f} ms")
    print(f"  label map from disk cache  {1000 * t_cached:9.1f} ms   ({t_label / t_cached:.1f}x faster)")
    print(f"  two-view appearance        {1000 * t_views:9.1f} ms")
    print(f"  trajectory + rendering     {1000 * t_navigation:9.1f} ms")
    print(f"  one sample, uncached       {1000 * t_sample:9.1f} ms")
    print(f"  one sample, cached labels  {1000 * t_sample_cached:9.1f} ms")
    print(
        f"proxy training step (2D AutoEncoder, batch {args.batch} x {args.steps + 1} slices, {default_threads} threads)"
    )
    print(f"  step                       {1000 * t_step:9.1f} ms")
    k = args.per_volume
    amortised = (t_cached + t_views) / k + t_navigation
    for name, seconds in (
        ("uncached", t_sample),
        ("cached labels", t_sample_cached),
        (f"cached, {k}/volume", amortised),
    ):
        workers = args.batch * seconds / t_step
        print(f"  workers needed, {name:<17} {workers:6.2f}  -> {math.ceil(workers)}  (target 2)")


if __name__ == "__main__":
    main()
