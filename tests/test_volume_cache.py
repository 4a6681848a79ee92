"""Your own scans are loaded once: ScreenedVolumeDataset checks every volume before the first step (a file whose
data is bad is skipped by name, or stops a strict run), caches what is deterministic, and serves the cached copy
until the file changes."""

import gzip
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Compose, SpatialPadd

from monai_slicenav.data import ScreenedVolumeDataset, describe_data, file_item_hash, preprocessing_hash, user_datalist
from monai_slicenav.data.store import read_entry
from monai_slicenav.pack import packed_metadata
from monai_slicenav.transforms import LoadVolumed, RandSliceTrajectoryd, RenderSlicesd
from monai_slicenav.volume import STORED_LEVELS

from .helpers import BUNDLES
from .test_own_scans import ORIENTED, head


def write(path, data, affine=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data.astype(np.float32), np.eye(4) if affine is None else affine), str(path))
    return path


def chain(load=None):
    return Compose(
        [load or LoadVolumed(foreground_label=True), RandSliceTrajectoryd("label", num_steps=2, spatial_size=16),
         RenderSlicesd("image", 16)]
    )  # fmt: skip


@pytest.fixture
def folder(tmp_path):
    for index, (name, affine) in enumerate(ORIENTED.items()):
        write(tmp_path / "scans" / f"{name}.nii.gz", head(seed=index), affine)
    return tmp_path / "scans"


def test_the_cached_copy_equals_a_fresh_load_and_is_read_without_loading(folder, tmp_path, monkeypatch):
    items = user_datalist(folder)
    cache = tmp_path / "cache"
    ScreenedVolumeDataset(items, chain(), cache_dir=cache)
    entries = sorted(cache.glob("*.snv"))
    assert len(entries) == 3
    cached = read_entry(entries[0])  # the compact store: no pickle, no float32 copy
    assert set(cached) >= {"image", "label"} and cached["label"].dtype == torch.uint8

    calls = []
    monkeypatch.setattr(LoadVolumed, "_read", lambda self, *a, **k: calls.append(a) or pytest.fail("loaded again"))
    again = ScreenedVolumeDataset(items, chain(), cache_dir=cache)
    again.transform.set_random_state(3)
    served = again[1]
    monkeypatch.undo()
    fresh_chain = chain()
    fresh_chain.set_random_state(3)
    fresh = fresh_chain(items[1])
    assert not calls
    assert torch.allclose(served["image"], fresh["image"], atol=0.5 / STORED_LEVELS + 1e-6)  # the stored precision
    assert torch.allclose(served["poses"], fresh["poses"])


def test_a_padded_volume_is_stored_compactly_and_read_back_on_its_grid(folder, tmp_path):
    padded = Compose([LoadVolumed(foreground_label=True), SpatialPadd(("image", "label"), (40, 40, 40))])
    dataset = ScreenedVolumeDataset(user_datalist(folder), padded, cache_dir=tmp_path / "cache")
    for index, item in enumerate(user_datalist(folder)):
        stored, fresh = dataset[index], padded(item)
        assert stored["image"].shape == fresh["image"].shape == (1, 40, 40, 40)
        assert torch.equal(stored["image"].affine, fresh["image"].affine)
        assert torch.allclose(stored["image"], fresh["image"], atol=0.5 / STORED_LEVELS + 1e-6)
        assert torch.equal(stored["label"], fresh["label"])
    assert sum(e.stat().st_size for e in (tmp_path / "cache").glob("*.snv")) < 3 * 40**3 / 4


def test_a_replaced_file_or_other_preprocessing_is_not_served_from_the_cache(folder, tmp_path):
    items = user_datalist(folder)
    first = file_item_hash(items[0])
    write(Path(items[0]["image"]), head(seed=9))
    assert file_item_hash(items[0]) != first
    load = LoadVolumed(foreground_label=True)
    padded = [load, SpatialPadd("image", (40, 40, 40))]
    assert preprocessing_hash([load]) != preprocessing_hash(padded)
    assert preprocessing_hash(padded) != preprocessing_hash([load, SpatialPadd("image", (48, 48, 48))])
    assert preprocessing_hash([LoadVolumed(foreground_label=False)]) != preprocessing_hash([load])


def bad_scans(folder):
    data = head(seed=5)
    data[3, 4, 5] = np.nan
    write(folder / "nan.nii.gz", data)
    write(folder / "flat.nii.gz", np.full((12, 12, 12), 7.0))
    good = write(folder / "tmp.nii.gz", head(seed=6)).read_bytes()
    raw = gzip.decompress(good)
    (folder / "cut.nii.gz").write_bytes(gzip.compress(raw[: len(raw) // 2]))  # header fine, data truncated
    (folder / "tmp.nii.gz").unlink()
    return {"nan.nii.gz": "NaN", "flat.nii.gz": "constant", "cut.nii.gz": "damaged"}


def test_bad_data_is_skipped_by_name_before_training_or_stops_a_strict_run(folder, tmp_path, caplog):
    expected = bad_scans(folder)
    items = user_datalist(folder)
    assert len(items) == 6  # the headers are fine: only loading finds these
    dataset = ScreenedVolumeDataset(items, chain(), cache_dir=tmp_path / "cache")
    assert len(dataset) == 3 and {s["file"].rsplit("/", 1)[-1] for s in dataset.skipped} == set(expected)
    warned = "\n".join(r.getMessage() for r in caplog.records)
    for name, reason in expected.items():
        line = next(line for line in warned.splitlines() if name in line)
        assert reason in line and line.endswith("skipped.")
    described = describe_data(str(folder), train=dataset)
    assert (described["count"], described["skipped"]) == (3, 3)
    assert {e["file"].rsplit("/", 1)[-1]: e["reason"] for e in described["skipped_files"]}["nan.nii.gz"].endswith(
        "NaN or Inf values"
    )
    with pytest.raises(ValueError, match=r"(nan|flat|cut)\.nii\.gz: "):
        ScreenedVolumeDataset(items, chain(), strict=True)


def test_nothing_usable_is_one_clear_error(tmp_path):
    folder = tmp_path / "scans"
    write(folder / "flat.nii.gz", np.zeros((10, 10, 10)))
    with pytest.raises(FileNotFoundError, match=r"none of the 1 volumes could be used; the first: .*flat\.nii\.gz"):
        ScreenedVolumeDataset(user_datalist(folder), chain())


def test_a_bundle_run_on_a_folder_with_bad_files_trains_and_records_them(folder, tmp_path):
    from monai_slicenav.cli import main

    bad_scans(folder)
    out = tmp_path / "run"
    main(["pretrain", "tokenizer_only", "2", str(out), "--preset", "micro", "--cache_dir", str(tmp_path / "stages"),
          "--data", str(folder)])  # fmt: skip
    data = json.loads((out / "encoder" / "encoder.json").read_text())["provenance"]["data"]
    assert data["count"] + data["validation_count"] == 3 and data["skipped"] == 3
    assert sorted(e["file"].rsplit("/", 1)[-1] for e in data["skipped_files"]) == ["cut.nii.gz", "flat.nii.gz",
                                                                                   "nan.nii.gz"]  # fmt: skip
    stage = Path(json.loads((out / "pretrain.json").read_text())["stages"][-1]["root"])
    bundle = tmp_path / "shared"
    shutil.copytree(BUNDLES / "slicenav_tokenizer" / "configs", bundle / "configs")
    shutil.copytree(stage / "models", bundle / "models")
    source = packed_metadata(bundle)["data_source"]
    assert source.startswith("Own scans: ") and f"from {folder} (3 files skipped" in source
