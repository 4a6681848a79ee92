"""Benchmark: rendering a slice trajectory, against a bare ``grid_sample`` and against MONAI resampling.

Prints, per case, medians of several runs in one process and the ratios:

* ``full / bare``: our full path (``RandSliceTrajectory`` + ``RenderSlices``: validation, foreground box, walk,
  points and sampling) over one bare ``torch.nn.functional.grid_sample`` of the same precomputed points, called
  the plain way, the volume as a batch of one and the slices as the depth of one (1, T, h, w) grid (target <= 1.2);
* ``full / bare_batched``: the same over the bare call in the layout our renderer uses, the T slices as the batch
  (the volume expanded, not copied); the CPU kernel parallelises over the batch, so this bare call is ~2x faster
  than the plain one and the ratio shows our remaining overhead (validation, box, walk, points);
* ``full / bare, 4 trajectories per volume``: the same when four trajectories share one volume's validation and
  foreground box, as ``RandSliceTrajectoryd(num_samples=4)`` does;
* ``render-only / bare``: the same without trajectory sampling (poses given), i.e. without the foreground box;
* ``monai_volume / full``: rendering each slice by resampling the whole volume into the slice's frame with MONAI
  ``SpatialResample`` (output = the full volume extent, one plane kept), over our full path (target >= 100);
* ``monai_plane / full``: MONAI ``SpatialResample`` straight onto each slice's (h, w, 1) grid, a fairer per-slice
  baseline, over our full path.

* with ``--device cuda``: ``render_on_device``'s rendering of a batch (16 volumes of 160^3, 8 slices of 128^2 each)
  there, against a bare ``grid_sample`` of the same points, with the achieved bytes per second against the device's
  memory bandwidth.

Run: ``python bench/render.py [--repeats 7] [--large] [--device cuda]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.transforms import SpatialResample

from monai_slicenav.data.phantom import shepp_logan_volume
from monai_slicenav.geometry import Pose, slice_points
from monai_slicenav.transforms import RandSliceTrajectory, RenderSlices, world_to_grid


def interleaved_medians(candidates: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time (ms) of each candidate, run in rotation so that machine load drifts hit all alike."""
    for fn in candidates.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(values) for name, values in times.items()}


def precomputed_grid(volume: MetaTensor, poses: Pose, size: int) -> torch.Tensor:
    """The exact normalised points our renderer samples, built outside the timed region."""
    to_grid = world_to_grid(volume.affine, volume.shape[1:]).float()
    points = slice_points(poses, (size, size))  # (T, h, w, 3) world mm
    return (points @ to_grid[:3, :3].T + to_grid[:3, 3])[None]  # (1, T, h, w, 3)


def slice_frame_affine(pose: Pose, size: int, depth: int) -> torch.Tensor:
    """Affine of a (size, size, depth) grid whose middle plane is the slice at ``pose`` (rows, cols, normal)."""
    step = float(pose.spacing)
    axes = torch.stack([pose.rotation[:, 1], pose.rotation[:, 0], pose.rotation[:, 2]], dim=1) * step
    origin = pose.center - axes @ torch.tensor([(size - 1) / 2, (size - 1) / 2, (depth - 1) / 2])
    affine = torch.eye(4, dtype=torch.float64)
    affine[:3, :3], affine[:3, 3] = axes.double(), origin.double()
    return affine


def monai_render(volume: MetaTensor, poses: Pose, size: int, depth: int) -> torch.Tensor:
    """Per-slice MONAI resampling onto a (size, size, depth) grid, keeping the middle plane."""
    resample = SpatialResample(mode="bilinear", padding_mode="zeros", dtype=torch.float32)
    planes = []
    for t in range(poses.batch_shape[0]):
        out = resample(volume, dst_affine=slice_frame_affine(poses[t], size, depth), spatial_size=(size, size, depth))
        planes.append(out[..., (depth - 1) // 2])
    return torch.stack(planes)


def run_case(shape: int, steps: int, size: int, repeats: int, monai_repeats: int) -> None:
    volume = shepp_logan_volume(shape)
    sampler = RandSliceTrajectory(steps - 1, size, mode="mixed")
    sampler.set_random_state(0)
    renderer = RenderSlices(size)
    poses, _ = sampler(volume)
    grid = precomputed_grid(volume, poses, size)
    data = volume.as_tensor()[None]

    ours = renderer(volume, poses)
    bare_out = F.grid_sample(data, grid, align_corners=False)[0].permute(1, 0, 2, 3)
    batched_data, batched_grid = data.expand(steps, *data.shape[1:]), grid.reshape(steps, 1, size, size, 3)
    depth = 2 * (max(shape * 1.0, size * float(poses.spacing.max())) // 2) + 1  # odd: a true middle plane
    monai_out = monai_render(volume, poses[:2], size, int(depth))
    print(
        f"check: |ours - bare| = {float((ours - bare_out).abs().max()):.2e}, "
        f"|ours - monai| = {float((ours[:2] - monai_out).abs().max()):.2e} (intensities in [0, 1])"
    )

    def full() -> torch.Tensor:
        p, _ = sampler(volume)
        return renderer(volume, p)

    def full_shared_frame() -> list[torch.Tensor]:
        # what RandSliceTrajectoryd(num_samples=4) does: validate + foreground box once, four trajectories
        frame = sampler.frame(volume)
        outputs = []
        for _ in range(4):
            sampler.randomize()
            outputs.append(renderer(volume, sampler.walk(frame)[0]))
        return outputs

    fast = interleaved_medians(
        {
            "full": full,
            "full_x4": full_shared_frame,
            "bare": lambda: F.grid_sample(data, grid, align_corners=False),
            "bare_batched": lambda: F.grid_sample(batched_data, batched_grid, align_corners=False),
            "trajectory": lambda: sampler(volume),
            "render": lambda: renderer(volume, poses),
        },
        repeats,
    )
    slow = interleaved_medians(
        {
            "monai_volume": lambda: monai_render(volume, poses, size, int(depth)),
            "monai_plane": lambda: monai_render(volume, poses, size, 1),
        },
        monai_repeats,
    )
    t_full, t_bare, t_traj, t_render = fast["full"], fast["bare"], fast["trajectory"], fast["render"]
    t_monai_volume, t_monai_plane = slow["monai_volume"], slow["monai_plane"]
    print(f"case {shape}^3 volume, {steps} slices of {size}^2 ({torch.get_num_threads()} threads)")
    print(f"  bare grid_sample          {t_bare:10.1f} ms   (one (1, T, h, w) grid)")
    print(f"  bare grid_sample, batched {fast['bare_batched']:10.1f} ms   (T slices as the batch)")
    print(f"  full path (ours)          {t_full:10.1f} ms   (trajectory sampling alone {t_traj:.1f} ms)")
    print(f"  MONAI whole-volume/slice  {t_monai_volume:10.1f} ms")
    print(f"  MONAI plane/slice         {t_monai_plane:10.1f} ms")
    print(f"  render only (ours)        {t_render:10.1f} ms   (validation + points + sampling, poses given)")
    print(f"  ratio full / bare           {t_full / t_bare:8.2f}x  (target <= 1.2)")
    print(f"  ratio full / bare, 4 per vol  {fast['full_x4'] / 4 / t_bare:6.2f}x  (validation + box shared by 4)")
    print(f"  ratio render-only / bare    {t_render / t_bare:8.2f}x")
    print(f"  ratio full / bare_batched   {t_full / fast['bare_batched']:8.2f}x  (our overhead over the same layout)")
    print(f"  ratio monai_volume / full   {t_monai_volume / t_full:8.1f}x  (target >= 100)")
    print(f"  ratio monai_plane / full    {t_monai_plane / t_full:8.1f}x")


PEAK_BANDWIDTH_GBS = {"H100": 3350.0, "H200": 4800.0, "A100": 2039.0}  # HBM, by device name (vendor figures)


def device_case(device: str, batch: int, steps: int, size: int, shape: int, repeats: int) -> None:
    """``render_on_device`` as the trainer runs it: a batch of volumes already on ``device`` rendered at (B, T) poses
    by one ``render_slices`` call, against a bare ``grid_sample`` of the same points there; the achieved bytes per
    second (8 float32 neighbours read per pixel plus the pixel written) against the device's memory bandwidth."""
    from monai_slicenav.transforms import render_slices

    volume = shepp_logan_volume(shape)
    sampler = RandSliceTrajectory(steps - 1, size, mode="mixed")
    sampler.set_random_state(0)
    poses = [sampler(volume)[0] for _ in range(batch)]
    stacked = Pose(*(torch.stack([getattr(p, f) for p in poses]) for f in ("center", "rotation", "spacing")))
    volumes = volume.as_tensor()[None].expand(batch, -1, -1, -1, -1).contiguous().to(device)
    grid = torch.cat([precomputed_grid(volume, p, size) for p in poses]).to(device)
    affine = volume.affine.to(device)
    stacked = stacked.to(device=device)

    def synced(fn: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            out = fn()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            return out

        return run

    times = interleaved_medians(
        {
            "render": synced(lambda: render_slices(volumes, affine, stacked, (size, size))),
            "bare": synced(lambda: F.grid_sample(volumes, grid, align_corners=False)),
        },
        repeats,
    )
    pixels = batch * steps * size * size
    moved = pixels * (8 + 1) * 4
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"
    peak = next((v for k, v in PEAK_BANDWIDTH_GBS.items() if k in name), None)
    print(f"device case on {name}: {batch} volumes of {shape}^3, {steps} slices of {size}^2 each")
    for label, ms in times.items():
        rate = moved / (ms / 1000) / 1e9
        share = f" = {rate / peak:.1%} of {peak:.0f} GB/s" if peak else ""
        print(f"  {label:7s} {ms:8.2f} ms  {rate:8.1f} GB/s{share}")
    print(f"  ratio render / bare  {times['render'] / times['bare']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=21, help="timed runs per measurement (median reported)")
    parser.add_argument("--monai-repeats", type=int, default=3, help="timed runs of the slow MONAI baselines")
    parser.add_argument("--large", action="store_true", help="also run 256^3 with 64 slices of 256^2")
    parser.add_argument("--device", default=None, help="also time render_on_device's rendering there, e.g. cuda")
    args = parser.parse_args()
    if args.device:
        device_case(args.device, 16, 8, 128, 160, args.repeats)
        return
    run_case(160, 32, 128, args.repeats, args.monai_repeats)
    if args.large:
        run_case(256, 64, 256, args.repeats, args.monai_repeats)


if __name__ == "__main__":
    main()
