"""The compact volume store: an entry renders the slices of the volume it holds (within the stored precision),
a damaged entry is detected and rebuilt, an interrupted build leaves nothing that reads as complete, and builders in
parallel (worker processes, or two processes on one store) each get every scan once and whole."""

import errno
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_slicenav.data import ScreenedVolumeDataset, user_datalist
from monai_slicenav.data.store import StoreEntryError, read_entry, read_header, write_entry
from monai_slicenav.geometry import Pose, axis_angle_to_matrix
from monai_slicenav.transforms import LoadVolumed
from monai_slicenav.transforms.render import render_slices
from monai_slicenav.volume import STORED_LEVELS

from .test_own_scans import head
from .test_volume_cache import chain

OBLIQUE = np.array([[0.0, 1.1, 0.3, -20.0], [-0.9, 0.0, 0.2, 14.0], [0.1, -0.2, 1.4, 3.0], [0, 0, 0, 1.0]])


def padded_head(seed=0):
    """A head in a zero background (so the store crops it), noise inside."""
    data = np.zeros((40, 36, 34), np.float32)
    data[5:35, 4:32, 4:30] = head(seed=seed)
    return data


def oblique_poses(affine: torch.Tensor, shape) -> Pose:
    centre = affine[:3, :3] @ (torch.tensor(shape, dtype=torch.float64) / 2) + affine[:3, 3]
    rotation = axis_angle_to_matrix(torch.tensor([[0.4, -0.3, 0.5], [-0.2, 0.6, 0.1]], dtype=torch.float64))
    shifts = torch.tensor([[3.0, -2.0, 1.0], [-4.0, 1.0, 2.5]], dtype=torch.float64)
    return Pose(center=(centre + shifts)[None], rotation=rotation[None], spacing=torch.tensor([[0.9, 1.3]]))


def loaded(tmp_path, seed=0):
    path = tmp_path / f"scan{seed}.nii.gz"
    nib.save(nib.Nifti1Image(padded_head(seed), OBLIQUE), str(path))
    return LoadVolumed(foreground_label=True)({"source": "file", "image": str(path)})


def test_an_entry_renders_the_volume_slices_at_an_oblique_pose_on_an_oblique_affine(tmp_path):
    item = loaded(tmp_path)
    size = write_entry(tmp_path / "e.snv", item)
    stored = read_entry(tmp_path / "e.snv")
    header = read_header(tmp_path / "e.snv")
    assert header["volumes"]["image"]["shape"][1:] < list(item["image"].shape[1:])  # cropped to the head on disk
    assert header["volumes"]["label"]["kind"] == "threshold"  # the foreground is not stored as voxels
    assert size < item["image"].numel() / 2  # uint8, compressed
    assert stored["image"].shape == item["image"].shape and torch.equal(stored["image"].affine, item["image"].affine)
    assert torch.allclose(stored["image"], item["image"], atol=0.5 / STORED_LEVELS + 1e-6)
    assert torch.equal(stored["label"], item["label"])
    assert stored["label"].dtype == torch.uint8
    poses = oblique_poses(item["image"].affine.double(), item["image"].shape[1:])
    want = render_slices(item["image"][None], item["image"].affine, poses, (24, 24))
    got = render_slices(stored["image"][None], stored["image"].affine, poses, (24, 24))
    assert want.abs().sum() > 10  # the slices cross the head
    assert torch.allclose(got, want, atol=0.5 / STORED_LEVELS + 1e-6)
    mask_want = render_slices(item["label"][None].float(), item["label"].affine, poses, (24, 24), mode="nearest")
    mask_got = render_slices(stored["label"][None].float(), stored["label"].affine, poses, (24, 24), mode="nearest")
    assert torch.equal(mask_got, mask_want)  # the foreground, kept as a threshold, is exact
    assert stored["source"] == "file" and stored["image"].meta["filename_or_obj"].endswith("scan0.nii.gz")


def test_labels_and_other_volumes_keep_their_values(tmp_path):
    labels = torch.zeros(1, 12, 10, 8, dtype=torch.int64)
    labels[0, 2:9, 3:7, 1:6] = 300  # needs int16
    labels[0, 4, 4, 4] = 7
    signal_map = torch.linspace(-2, 5, 960).reshape(1, 12, 10, 8)  # outside [0, 1]: kept as float32
    item = {"image": MetaTensor(signal_map, affine=torch.eye(4)), "label": MetaTensor(labels, affine=torch.eye(4))}
    write_entry(tmp_path / "e.snv", item)
    stored = read_entry(tmp_path / "e.snv")
    assert stored["label"].dtype == torch.int64 and torch.equal(stored["label"], labels)
    assert torch.equal(stored["image"], signal_map)
    with pytest.raises(TypeError):
        write_entry(tmp_path / "bad.snv", {"image": item["image"], "when": object()})
    assert not (tmp_path / "bad.snv").exists()


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "other_format"])
def test_a_damaged_entry_is_detected_and_rebuilt_never_rendered(tmp_path, damage, caplog):
    folder = tmp_path / "scans"
    folder.mkdir()
    nib.save(nib.Nifti1Image(padded_head(), OBLIQUE), str(folder / "a.nii.gz"))
    items = user_datalist(folder)
    dataset = ScreenedVolumeDataset(items, chain(), cache_dir=tmp_path / "store", num_workers=0)
    (entry,) = (tmp_path / "store").glob("*.snv")
    good = read_entry(entry)
    data = entry.read_bytes()
    damaged = {
        "truncate": data[: len(data) - 200],
        "flip": data[:-100] + bytes([data[-100] ^ 0xFF]) + data[-99:],
        "garbage": os.urandom(len(data)),
        "other_format": data.replace(b'"format": 2', b'"format": 1'),
    }[damage]
    entry.write_bytes(damaged)
    with pytest.raises(StoreEntryError, match=str(entry.name)):
        read_entry(entry)
    if damage in ("truncate", "garbage", "other_format"):  # what the start-up check (headers only) sees
        with pytest.raises(StoreEntryError, match=str(entry.name)):
            read_header(entry)
    served = dataset._cachecheck(dataset.data[0])
    assert "rebuild" in caplog.text
    assert torch.equal(served["image"], good["image"]) and torch.equal(read_entry(entry)["image"], good["image"])


def test_a_failed_write_leaves_no_entry_and_no_temporary_file(tmp_path, monkeypatch):
    item = loaded(tmp_path)

    def full_disk(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        write_entry(tmp_path / "store" / "e.snv", item)
    assert list((tmp_path / "store").iterdir()) == []


def test_an_entry_gets_the_permissions_of_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        write_entry(tmp_path / "e.snv", loaded(tmp_path))
    finally:
        os.umask(previous)
    assert (tmp_path / "e.snv").stat().st_mode & 0o777 == 0o640


BUILD = textwrap.dedent(
    """
    import sys, time
    from monai_slicenav.data import ScreenedVolumeDataset, user_datalist
    from monai_slicenav.data import store
    from tests.test_volume_cache import chain
    slow = store._write_atomically
    def _slow(path, parts):  # a build slow enough to be killed half-way
        time.sleep(float(sys.argv[3]))
        return slow(path, parts)
    store._write_atomically = _slow
    dataset = ScreenedVolumeDataset(user_datalist(sys.argv[1]), chain(), cache_dir=sys.argv[2], num_workers=0)
    print(len(dataset), flush=True)
    """
)


def scan_folder(tmp_path, count):
    folder = tmp_path / "scans"
    folder.mkdir()
    for seed in range(count):
        nib.save(nib.Nifti1Image(padded_head(seed), OBLIQUE), str(folder / f"s{seed}.nii.gz"))
    return folder


def build(folder, store, delay):
    root = os.path.dirname(os.path.dirname(__file__))
    return subprocess.Popen(
        [sys.executable, "-c", BUILD, str(folder), str(store), str(delay)], cwd=root, stdout=subprocess.PIPE, text=True
    )


def test_a_build_killed_half_way_leaves_only_whole_entries(tmp_path):
    folder, store = scan_folder(tmp_path, 6), tmp_path / "store"
    process = build(folder, store, 0.5)
    deadline = time.monotonic() + 60
    while len(list(store.glob("*.snv"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    entries = list(store.glob("*.snv"))
    assert 2 <= len(entries) < 6
    for entry in entries:
        read_entry(entry)  # every file under an entry's name is whole
    dataset = ScreenedVolumeDataset(user_datalist(folder), chain(), cache_dir=store, num_workers=0)
    assert len(dataset) == 6 and len(list(store.glob("*.snv"))) == 6


def test_two_processes_building_one_store_each_get_every_scan_once_and_whole(tmp_path):
    folder, store = scan_folder(tmp_path, 5), tmp_path / "store"
    first, second = build(folder, store, 0.1), build(folder, store, 0.1)
    assert [int(p.communicate(timeout=120)[0].strip()) for p in (first, second)] == [5, 5]
    entries = sorted(store.glob("*.snv"))
    assert len(entries) == 5 and not list(store.glob(".*.tmp"))
    sources = {read_entry(e)["image"].meta["filename_or_obj"] for e in entries}
    assert len(sources) == 5


def test_worker_processes_build_the_same_store_and_record_failures(tmp_path):
    folder = scan_folder(tmp_path, 4)
    nib.save(nib.Nifti1Image(np.full((9, 9, 9), 3.0, np.float32), np.eye(4)), str(folder / "flat.nii.gz"))
    items = user_datalist(folder)
    serial = ScreenedVolumeDataset(items, chain(), cache_dir=tmp_path / "serial", num_workers=0)
    parallel = ScreenedVolumeDataset(items, chain(), cache_dir=tmp_path / "parallel", num_workers=2)
    assert multiprocessing.current_process().name == "MainProcess"
    assert [i["image"] for i in parallel.data] == [i["image"] for i in serial.data] and len(serial) == 4
    assert parallel.skipped == serial.skipped and "constant" in serial.skipped[0]["reason"]
    for name in ("serial", "parallel"):
        assert len(list((tmp_path / name).glob("*.snv"))) == 4
    (failed,) = (tmp_path / "parallel").glob("*.failed")
    assert json.loads(failed.read_text())["file"].endswith("flat.nii.gz")
    pair = [sorted((tmp_path / name).glob("*.snv")) for name in ("serial", "parallel")]
    assert [p.name for p in pair[0]] == [p.name for p in pair[1]]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(*pair, strict=True))


def _build_as_rank(rank: int, world: int, folder: str, store: str, port: int, log: str) -> None:
    """One rank of a gloo group building the store; every entry it writes is appended to ``log``."""
    import monai_slicenav.data.screened as screened

    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    write = screened.write_entry

    def logged(path, item):
        with open(log, "a") as out:
            out.write(f"{rank} {os.path.basename(path)}\n")
        return write(path, item)

    screened.write_entry = logged
    dataset = ScreenedVolumeDataset(user_datalist(folder), chain(), cache_dir=store, num_workers=0)
    with open(log, "a") as out:
        out.write(f"rank{rank} usable {len(dataset)} skipped {len(dataset.skipped)}\n")
    torch.distributed.destroy_process_group()


def test_ranks_of_a_distributed_run_each_store_their_share_once(tmp_path):
    folder, store, log = scan_folder(tmp_path, 5), tmp_path / "store", tmp_path / "writes.log"
    nib.save(nib.Nifti1Image(np.zeros((9, 9, 9), np.float32), np.eye(4)), str(folder / "empty.nii.gz"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    torch.multiprocessing.spawn(_build_as_rank, args=(2, str(folder), str(store), port, str(log)), nprocs=2)
    lines = log.read_text().splitlines()
    writes = [line.split() for line in lines if not line.startswith("rank")]
    assert sorted(name for _, name in writes) == sorted(p.name for p in store.glob("*.snv"))  # each written once
    assert {rank for rank, _ in writes} == {"0", "1"}  # both ranks took a share
    assert sorted(line for line in lines if line.startswith("rank")) == [
        "rank0 usable 5 skipped 1",
        "rank1 usable 5 skipped 1",
    ]


def test_entries_of_the_float32_cache_before_0_8_are_ignored_not_misread(tmp_path):
    folder, store = scan_folder(tmp_path, 2), tmp_path / "store"
    items = user_datalist(folder)
    store.mkdir()
    dataset = ScreenedVolumeDataset(items, chain(), cache_dir=store, num_workers=0)
    stale = store / f"{dataset.entry_path(items[0]).stem}.pt"  # the old format's name for the same scan
    torch.save({"image": torch.full((1, 4, 4, 4), 7.0)}, stale)
    again = ScreenedVolumeDataset(items, chain(), cache_dir=store, num_workers=0)
    assert float(again._cachecheck(again.data[0])["image"].max()) <= 1.0  # read from the .snv entry, not the .pt
    assert stale.is_file() and len(list(store.glob("*.snv"))) == 2
