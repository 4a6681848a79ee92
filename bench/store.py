"""Benchmark: the compact volume store against the float32 cache it replaced (``torch.save`` of the loaded image and
mask, the format before 0.8.0), on the real 1 mm heads installed on this machine.

Prints, per scan: the ``.nii.gz`` bytes; float32-cache and store bytes as ratios to them; medians of reading an
entry back (float32 cache ``torch.load`` as the baseline, store / cache ratio); the share of 32-plane Blosc2 blocks
that one trajectory's slices touch (why entries are read whole rather than block by block); and the time to render
one trajectory, for scale.

With ``--train_steps N``: trains the tokenizer bundle (``small`` preset, seed 0) on the scans twice, once reading the
store and once loading every scan afresh in float32 (no store), and prints both validation PSNRs on the held-out
real scan and their difference (the acceptance bound: within 0.2 dB).

Run: ``python bench/store.py [--repeats 5] [--train_steps 200]``.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from monai_slicenav.data.packaged import locate_volume
from monai_slicenav.data.store import read_entry, write_entry
from monai_slicenav.transforms import LoadVolumed, RandSliceTrajectory, RenderSlices

CANDIDATES = {
    "Colin27 (ch2)": "/usr/share/mricron/templates/ch2.nii.gz",
    "Colin27 high-res (ch2better)": "/usr/share/mricron/templates/ch2better.nii.gz",
    "INIA19 brain": "/usr/share/mricron/templates/inia19-t1-brain.nii.gz",
}
BLOCK_PLANES = 32


def scans() -> dict[str, str]:
    """The candidate scans present here, plus nilearn's MNI152 when installed."""
    found = {name: path for name, path in CANDIDATES.items() if os.path.isfile(path)}
    mni = locate_volume(
        {"kind": "pip", "package": "nilearn", "path": "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"}
    )
    if mni is not None and mni.is_file():
        found["MNI152 2009a (nilearn)"] = str(mni)
    return found


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def blocks_touched(volume, poses, size: int) -> float:
    """Share of the store's 32-plane blocks (along the first axis) that the slices at ``poses`` sample."""
    from monai_slicenav.geometry import slice_points

    points = slice_points(poses, (size, size)).reshape(-1, 3).double()
    voxels = torch.linalg.solve(volume.affine.double(), torch.cat([points, torch.ones(len(points), 1)], 1).T)[0]
    inside = voxels[(voxels >= 0) & (voxels < volume.shape[1])]
    blocks = -(-volume.shape[1] // BLOCK_PLANES)
    return len(torch.unique((inside // BLOCK_PLANES).long())) / blocks


def storage_table(found: dict[str, str], repeats: int, work: Path) -> None:
    print(
        "| scan | .nii.gz MB | float32 cache / nii.gz | store / nii.gz | read: store / cache | blocks touched ", end=""
    )
    print("| render ms |")
    print("|---|---|---|---|---|---|---|")
    load = LoadVolumed(foreground_label=True)
    sampler, render = RandSliceTrajectory(7, 128), RenderSlices(128)
    sampler.set_random_state(0)
    for name, path in found.items():
        item = load({"source": "file", "image": path})
        buffer = io.BytesIO()
        torch.save({k: v for k, v in item.items()}, buffer)
        cache = work / "cache.pt"
        cache.write_bytes(buffer.getvalue())
        stored = write_entry(work / "entry.snv", item)
        raw = os.path.getsize(path)
        cache_ms = median_ms(lambda cache=cache: torch.load(cache, weights_only=False), repeats)
        store_ms = median_ms(lambda: read_entry(work / "entry.snv"), repeats)
        volume = read_entry(work / "entry.snv")["image"]
        poses, _ = sampler(volume)
        render_ms = median_ms(lambda volume=volume, poses=poses: render(volume, poses), repeats)
        touched = blocks_touched(volume, poses, 128)
        print(
            f"| {name} | {raw / 1e6:.1f} | {len(buffer.getvalue()) / raw:.1f}x | {stored / raw:.2f}x | "
            f"{store_ms / cache_ms:.2f} ({store_ms:.0f} / {cache_ms:.0f} ms) | {touched:.0%} "
            f"| {render_ms:.0f} |"
        )


def psnr_comparison(found: dict[str, str], steps: int, work: Path) -> None:
    from monai_slicenav.experiments.pretrain import PRESETS, run_stage, stage_overrides

    folder = work / "scans"
    folder.mkdir()
    for path in list(found.values())[:2]:
        shutil.copy(path, folder / Path(path).name)
    psnr = {}
    for label, store in (("float32, no store", None), ("store", str(work / "store"))):
        overrides = stage_overrides(
            "slicenav_tokenizer", PRESETS["small"], steps, 0, {"data": str(folder), "volume_cache_dir": store}
        )
        overrides["val_fraction"] = 0.5  # one scan trains, the other validates
        record = run_stage("slicenav_tokenizer", overrides, work / label.replace(" ", "_").replace(",", ""))
        psnr[label] = record["val_metrics"]["val_psnr"]
        print(f"{label}: validation PSNR {psnr[label]:.3f} dB ({record['wall_s']:.0f} s)")
    print(f"store - float32: {psnr['store'] - psnr['float32, no store']:+.3f} dB (acceptance: within 0.2 dB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train_steps", type=int, default=0, help="also compare the tokenizer's PSNR (0: skip)")
    args = parser.parse_args()
    found = scans()
    if not found:
        raise SystemExit("no real scans installed: apt-get install mricron-data, or pip install '.[data]'")
    with tempfile.TemporaryDirectory() as temp:
        storage_table(found, args.repeats, Path(temp))
        if args.train_steps:
            psnr_comparison(found, args.train_steps, Path(temp))


if __name__ == "__main__":
    main()
