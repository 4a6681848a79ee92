"""Benchmark: how storage, the store build, the training step and memory grow with the number of scans.

Generates N synthetic heads on disk as ``.nii.gz`` (int16, 1 mm; the synthetic engine's label maps painted as T1 by
``RandSynthAppearance``, then per file a random gain and Rician-like noise everywhere, background included, so no
two files are alike and none compresses unrealistically well), then, for each N, prints:

* raw bytes (the ``.nii.gz`` files), store bytes and their ratio;
* the store build wall time with 1 and with 2 worker processes, and their ratio (the baseline: 1 worker);
* steps per second of the tokenizer bundle (``small`` preset) reading the store, and its ratio to the smallest N;
* the input pipeline's share of a step (time spent waiting for the batch, DataLoader in the main process);
* bytes of store entries read per step;
* the peak resident memory of the trainer process (each N trains in a fresh process), and its ratio to the smallest N.

Heads default to 160 x 192 x 160 voxels (a cropped 1 mm head; the issue's 180 x 220 x 200 takes 1.6x longer to
generate and build on a 2-core CPU); ``--shape`` changes it. Files are reused between runs from ``--out``.

Run: ``python bench/scale.py [--sizes 10 100 1000] [--steps 30] [--out /tmp/slicenav_scale]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

BASE_HEADS = 4  # distinct label maps; every file is one of them with its own gain and noise


def generate(folder: Path, count: int, shape: tuple[int, int, int]) -> list[Path]:
    """``count`` heads in ``folder`` (those already there are kept)."""
    from monai_slicenav.transforms import RandSynthAppearance, SynthLabelEnsemble

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"head_{index:05d}.nii.gz" for index in range(count)]
    missing = [p for p in paths if not p.is_file()]
    if not missing:
        return paths
    engine, paint = SynthLabelEnsemble(spatial_size=shape), RandSynthAppearance()
    paint.set_random_state(0)
    bases = [paint(engine(seed)).numpy()[0] for seed in range(BASE_HEADS)]
    started = time.monotonic()
    for done, path in enumerate(missing, start=1):
        index = int(path.name[5:10])
        rng = np.random.default_rng(index)
        signal = bases[index % BASE_HEADS] * rng.uniform(800, 1200)
        noisy = np.hypot(signal + rng.normal(0, 12, shape), rng.normal(0, 12, shape))  # Rician magnitude noise
        temp = path.with_name(f".{path.name}")
        nib.save(nib.Nifti1Image(noisy.astype(np.int16), np.diag([1.0, 1.0, 1.0, 1.0])), str(temp))
        temp.rename(path)
        if done % 50 == 0:
            print(f"  generated {done}/{len(missing)} ({time.monotonic() - started:.0f} s)", flush=True)
    return paths


def build_store(paths: list[Path], store: Path, workers: int) -> float:
    """Wall time of building a fresh store of ``paths`` with ``workers`` processes."""
    from monai_slicenav.data import ScreenedVolumeDataset, user_datalist
    from monai_slicenav.transforms import LoadVolumed

    shutil.rmtree(store, ignore_errors=True)
    listing = store.parent / f"{store.name}.txt"
    listing.write_text("\n".join(str(p) for p in paths) + "\n")
    from monai.transforms import Compose

    start = time.perf_counter()
    ScreenedVolumeDataset(
        user_datalist(listing), Compose([LoadVolumed(foreground_label=True)]), store, num_workers=workers
    )
    return time.perf_counter() - start


def train_one(listing: str, store: str, steps: int) -> dict:
    """Train the tokenizer bundle for ``steps`` on the scans of ``listing`` (store already built); in this process."""
    from ignite.engine import Events
    from monai.bundle import ConfigWorkflow

    import monai_slicenav.data.screened as screened
    from monai_slicenav.experiments.pretrain import PRESETS, bundles_dir, stage_overrides, train_configs

    read_bytes = []
    original = screened.read_entry

    def counting(path):
        read_bytes.append(os.path.getsize(path))
        return original(path)

    screened.read_entry = counting
    overrides = stage_overrides("slicenav_tokenizer", PRESETS["small"], steps, 0, {"data": listing})
    overrides.update(volume_cache_dir=store, num_workers=0, val_fraction=0.01, val_interval=1000, max_epochs=1)
    root = Path(store).parent / "run"
    shutil.rmtree(root, ignore_errors=True)
    configs = bundles_dir() / "slicenav_tokenizer" / "configs"
    workflow = ConfigWorkflow(
        config_file=train_configs("slicenav_tokenizer"),
        meta_file=str(configs / "metadata.json"),
        workflow_type="train",
        bundle_root=str(root),
        **overrides,
    )
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    waits, marks = [], {}
    trainer.add_event_handler(Events.GET_BATCH_STARTED, lambda e: marks.update(start=time.perf_counter()))
    trainer.add_event_handler(Events.GET_BATCH_COMPLETED, lambda e: waits.append(time.perf_counter() - marks["start"]))
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=3), lambda e: marks.update(t0=time.perf_counter()))
    before = len(read_bytes)
    trainer.run()
    elapsed = time.perf_counter() - marks["t0"]
    return {
        "steps_per_s": (steps - 3) / elapsed,
        "input_share": sum(waits[3:]) / elapsed,
        "bytes_per_step": (sum(read_bytes[before:])) / steps,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--shape", type=int, nargs=3, default=[160, 192, 160])
    parser.add_argument("--out", default="/tmp/slicenav_scale")
    parser.add_argument("--train_one", nargs=2, metavar=("LISTING", "STORE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.train_one:
        torch.set_num_threads(os.cpu_count() or 1)
        print(json.dumps(train_one(*args.train_one, args.steps)))
        return
    out = Path(args.out)
    paths = generate(out / "scans", max(args.sizes), tuple(args.shape))
    build_store(paths[:2], out / "warm_up", 2)  # imports and first-call costs out of the timed builds
    rows = []
    for n in sorted(args.sizes):
        subset = paths[:n]
        raw = sum(p.stat().st_size for p in subset)
        one = build_store(subset, out / f"store_{n}_w1", 1)
        two = build_store(subset, out / f"store_{n}", 2)
        stored = sum(e.stat().st_size for e in (out / f"store_{n}").glob("*.snv"))
        listing = out / f"store_{n}.txt"
        command = [sys.executable, __file__, "--steps", str(args.steps), "--train_one", str(listing)]
        result = subprocess.run([*command, str(out / f"store_{n}")], capture_output=True, text=True, check=True)
        trained = json.loads(result.stdout.strip().splitlines()[-1])
        shutil.rmtree(out / f"store_{n}_w1", ignore_errors=True)
        rows.append({"n": n, "raw": raw, "stored": stored, "build_1": one, "build_2": two, **trained})
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]
    print(f"\nheads of {' x '.join(map(str, args.shape))} voxels, int16 .nii.gz; tokenizer bundle, small preset")
    print(
        f"| N | raw GB | store / raw | build s, 1 worker | 2 workers / 1 | steps/s | vs N={base['n']} | input share |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['n']} | {r['raw'] / 1e9:.2f} | {r['stored'] / r['raw']:.2f}x | {r['build_1']:.0f} | "
            f"{r['build_2'] / r['build_1']:.2f} | {r['steps_per_s']:.2f} | "
            f"{r['steps_per_s'] / base['steps_per_s']:.2f} | {r['input_share']:.0%} |"
        )
    print(f"| N | MB read per step | peak RSS MB | vs N={base['n']} |")
    print("|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['n']} | {r['bytes_per_step'] / 1e6:.1f} | {r['peak_rss_mb']:.0f} | "
            f"{r['peak_rss_mb'] / base['peak_rss_mb']:.2f} |"
        )


if __name__ == "__main__":
    main()
