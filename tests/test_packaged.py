import nibabel as nib
import numpy as np
import pytest

from monai_slicenav.data.packaged import (
    check_pair,
    grid_relation,
    load_packaged_manifest,
    locate_volume,
    packaged_pairs,
)


def write(path, data, affine):
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine), str(path))
    return path


@pytest.fixture
def grids(tmp_path):
    affine = np.array([[1.0, 0, 0, -10], [0, 1.0, 0, -12], [0, 0, 2.0, -8], [0, 0, 0, 1]])
    flipped = affine.copy()
    flipped[0] = [-1.0, 0, 0, -10 + 9]  # x stored backwards: the same voxel centres
    shifted = affine.copy()
    shifted[1, 3] += 1.0
    data = np.random.default_rng(0).random((10, 11, 6))
    return {
        "image": write(tmp_path / "image.nii.gz", data, affine),
        "same": write(tmp_path / "same.nii.gz", data > 0.5, affine),
        "flipped": write(tmp_path / "flipped.nii.gz", data[::-1] > 0.5, flipped),
        "shifted": write(tmp_path / "shifted.nii.gz", data > 0.5, shifted),
        "smaller": write(tmp_path / "smaller.nii.gz", data[:9] > 0.5, affine),
    }


def test_grid_relation(grids):
    assert grid_relation(grids["image"], grids["same"]) == "identical"
    assert grid_relation(grids["image"], grids["flipped"]) == "reoriented"
    assert grid_relation(grids["image"], grids["shifted"]) == "different"
    assert grid_relation(grids["image"], grids["smaller"]) == "different"


def test_check_pair_accepts_and_rejects_by_grid(grids):
    volumes = {
        name: {"id": name, "package": "test", "kind": "debian", "path": str(path)} for name, path in grids.items()
    }
    ok = check_pair({"name": "ok", "image": "image", "label": "flipped", "resample": None}, volumes)
    assert ok.usable and ok.item["label"] == str(grids["flipped"]) and "reoriented" in ok.message
    bad = check_pair({"name": "bad", "image": "image", "label": "shifted", "resample": None}, volumes)
    assert not bad.usable and "not on the grid" in bad.message and "shifted.nii.gz" in bad.message
    stated = check_pair({"name": "stated", "image": "image", "label": "shifted", "resample": "nearest"}, volumes)
    assert stated.usable and stated.item["resample"] == "nearest"
    volumes["gone"] = {"id": "gone", "package": "mricron-data", "kind": "debian", "path": "/nonexistent.nii.gz"}
    missing = check_pair({"name": "m", "image": "image", "label": "gone", "resample": None}, volumes)
    assert not missing.usable and "not installed (needs mricron-data, test)" in missing.message


def test_manifest_is_complete():
    manifest = load_packaged_manifest()
    ids = {v["id"] for v in manifest["volumes"]}
    for volume in manifest["volumes"]:
        assert {"package", "kind", "path", "modality", "licence", "role"} <= set(volume)
    for pair in manifest["pairs"]:
        assert pair["image"] in ids and all(
            other in ids for other in [pair.get("label"), *pair.get("probabilities", [])] if other
        )


def test_installed_pairs_are_on_their_image_grid():
    items = packaged_pairs()
    if not items:
        pytest.skip("no packaged volumes installed (pip install '.[data]' or apt-get install mricron-data)")
    for item in items:
        targets = [item["label"]] if "label" in item else item["probabilities"]
        for target in targets:
            relation = grid_relation(item["image"], target)
            assert relation != "different" or item["resample"] == "nearest", (item["name"], relation)


def test_colin27_aal_pair_when_installed():
    manifest = load_packaged_manifest()
    volumes = {v["id"]: v for v in manifest["volumes"]}
    if locate_volume(volumes["colin27_t1"]) is None:
        pytest.skip("Debian package mricron-data is not installed")
    (item,) = [i for i in packaged_pairs(manifest) if i["name"] == "colin27_aal"]
    label = nib.load(item["label"]).get_fdata()
    assert 90 <= len(np.unique(label)) <= 120  # AAL: 116 regions plus background
    assert item["label_names"].endswith("aal.nii.txt")


def test_labelled_case_raises_when_its_files_are_not_installed(monkeypatch):
    """A pair whose volumes are absent on this machine is a FileNotFoundError naming them (as documented), never an
    item with the path "None" that fails later in a loader (the skip marker of the packaged-data tests relies on it)."""
    from monai_slicenav.data import labelled

    monkeypatch.setattr(labelled, "locate_volume", lambda entry, key="path": None)
    with pytest.raises(FileNotFoundError, match="colin27_brain_aal.*not installed"):
        labelled.labelled_case("colin27_brain_aal")
