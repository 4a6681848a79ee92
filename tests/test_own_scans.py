"""Your own folder of scans: found as a folder, a glob, a list or a manifest; mixed orientations and spacings load
as RAS volumes in [0, 1] whose foreground (from the image alone) bounds the trajectories."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Compose

from monai_slicenav.data import pretraining_datalist, split_items, user_datalist, volume_files
from monai_slicenav.transforms import EmbeddedVolumed, LoadVolumed, RandSliceTrajectoryd, RenderSlicesd, otsu_threshold

ORIENTED = {  # voxel axes -> world, as scanners write them: RAS, LPS and a permuted, anisotropic one
    "ras": np.diag([1.0, 1.0, 1.0, 1.0]),
    "lps": np.diag([-1.2, -1.2, 1.5, 1.0]),
    "pir": np.array([[0.0, 0.0, -2.0, 0], [-1.0, 0.0, 0.0, 0], [0.0, -1.0, 0.0, 0], [0, 0, 0, 1.0]]),
}


def head(shape=(30, 28, 26), seed=0) -> np.ndarray:
    """A bright noisy ellipsoid (the head) in a dark, noisy background."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    inside = ((grid / np.array([0.7, 0.6, 0.5])[:, None, None, None]) ** 2).sum(0) < 1
    return (inside * (100 + 20 * rng.random(shape)) + 5 * rng.random(shape)).astype(np.float32)


@pytest.fixture
def scans(tmp_path):
    folder = tmp_path / "my_mri"
    for index, (name, affine) in enumerate(ORIENTED.items()):
        (folder / f"sub-{index}").mkdir(parents=True)
        nib.save(nib.Nifti1Image(head(seed=index), affine), str(folder / f"sub-{index}" / f"t1_{name}.nii.gz"))
    (folder / "notes.txt").write_text("not a scan")
    return folder


def test_a_folder_a_glob_and_a_list_find_the_same_scans(scans, tmp_path):
    found = volume_files(scans)
    assert [p.name for p in found] == ["t1_ras.nii.gz", "t1_lps.nii.gz", "t1_pir.nii.gz"]
    assert volume_files(f"{scans}/*/t1_*.nii.gz") == found
    listing = tmp_path / "scans.csv"
    listing.write_text("image\n" + "\n".join(str(p.relative_to(tmp_path)) for p in found) + "\n")
    assert volume_files(listing) == found
    names = [item["name"] for item in user_datalist(scans)]
    assert names == ["sub-0_t1_ras", "sub-1_t1_lps", "sub-2_t1_pir"]


def test_a_manifest_with_its_root(scans, tmp_path):
    manifest = {
        "name": "mine",
        "homepage": "https://example.org",
        "licence": "CC0",
        "cases": {"glob": "sub-*/t1.nii.gz", "id_regex": r"^(sub-\d+)/t1\.nii\.gz$", "expected": 3},
        "entries": {"t1": "{id}/t1.nii.gz"},
        "split": {"seed": 0, "fractions": {"train": 1.0}, "method": "sha256-bucket"},
    }
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="needs the folder"):
        volume_files(path)
    root = tmp_path / "downloaded"
    for scan in volume_files(scans):
        (root / scan.parent.name).mkdir(parents=True)
        (root / scan.parent.name / "t1.nii.gz").write_bytes(scan.read_bytes())
    found = volume_files(path, root)  # the manifest's first entry ("t1") is the image
    assert [p.relative_to(root).as_posix() for p in found] == [f"sub-{i}/t1.nii.gz" for i in range(3)]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p, "no such file, folder or glob match"),
        (lambda p: p.mkdir() or p, "no NIfTI volumes found"),
        (lambda p: p.with_suffix(".txt").write_text("gone.nii.gz\n") and p.with_suffix(".txt"), "do not exist"),
    ],
)
def test_pointing_at_nothing_fails_with_what_was_searched(tmp_path, make, message):
    target = make(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match=message):
        volume_files(target)


def test_mixed_orientations_load_as_ras_and_bound_the_trajectories(scans):
    load = EmbeddedVolumed(foreground_label=True)
    render = Compose([load, RandSliceTrajectoryd("label", num_steps=3, spatial_size=16), RenderSlicesd("image", 16)])
    render.set_random_state(0)
    for item in user_datalist(scans):
        loaded = load(item)
        image, label = loaded["image"], loaded["label"]
        assert label.dtype == torch.uint8 and label.shape == image.shape
        assert torch.all(torch.diag(image.affine)[:3] > 0)  # RAS: every axis points its world direction
        inside = image[label.bool()].mean()
        assert 0.05 < label.float().mean() < 0.3 and inside > 3 * image[~label.bool()].mean()
        out = render(item)
        assert out["image"].shape == (4, 1, 16, 16) and float(out["image"].amax(dim=(1, 2, 3)).min()) > 0.3


def test_otsu_splits_two_populations():
    values = torch.cat([torch.full((1000,), 0.1), torch.full((500,), 0.8)])
    assert 0.1 < otsu_threshold(values) < 0.8


def test_held_out_split_is_seeded_stable_and_never_synthetic(scans, tmp_path):
    items = [{"name": f"scan_{i:03d}"} for i in range(200)]
    train, held = split_items(items, 0.1, seed=0)
    assert 10 <= len(held) <= 30 and len(train) + len(held) == 200
    assert split_items(items, 0.1, seed=0) == (train, held) and split_items(items, 0.1, seed=1)[1] != held
    fewer_train, fewer_held = split_items(items[:100], 0.1, seed=0)  # a scan keeps its side when others go
    assert {i["name"] for i in fewer_held} == {i["name"] for i in held if i in items[:100]}
    assert len(split_items(items[:2], 0.1, 0)[1]) == 1  # two scans: one of each

    mine = {"data": str(scans), "seed": 0}
    train, validate = (pretraining_datalist(part, **mine) for part in ("train", "validate"))
    assert len(train) == 2 and len(validate) == 1 and all(i["source"] == "file" for i in train + validate)
    own_val = pretraining_datalist("validate", **mine, val_data=str(volume_files(scans)[0]))
    assert [i["name"] for i in own_val] == ["t1_ras"]
    default = pretraining_datalist("validate", num_val_synthetic=2, seed=3)
    assert [i["source"] for i in default] == ["synthetic", "synthetic"]


def test_a_fixed_val_seed_validates_every_training_seed_on_the_same_data(scans):
    def names(part, **kwargs):
        return [i["name"] for i in pretraining_datalist(part, num_synthetic=3, num_val_synthetic=2, **kwargs)]

    assert names("validate", seed=0, val_seed=999) == names("validate", seed=1, val_seed=999)
    assert names("validate", seed=0) != names("validate", seed=1)  # without it: drawn from the training seed
    assert not set(names("validate", seed=0, val_seed=999)) & set(names("train", seed=0, val_seed=999))
    mine = {"data": str(scans), "val_fraction": 0.5}
    assert names("validate", **mine, seed=0, val_seed=5) == names("validate", **mine, seed=7, val_seed=5)
    with pytest.raises(ValueError, match="val_seed 4 equals the training seed"):
        pretraining_datalist("validate", seed=4, val_seed=4)


def test_every_variant_pretrains_on_a_folder_and_says_so(scans, tmp_path, capsys):
    from monai_slicenav.cli import main
    from monai_slicenav.experiments.variants import VARIANT_TABLE
    from monai_slicenav.export import load_encoder

    cache = tmp_path / "cache"
    for variant in (v for v, entry in VARIANT_TABLE.items() if not entry.needs_labels):  # the others are refused
        main(["pretrain", variant, "2", str(tmp_path / variant), "--preset", "micro", "--cache_dir", str(cache),
              "--data", str(scans)])  # fmt: skip
        record = json.loads((tmp_path / variant / "encoder" / "encoder.json").read_text())
        data = record["provenance"]["data"]
        assert data["source"] == "own scans" and data["data"] == str(scans)
        assert (data["count"], data["validation_count"], data["skipped"]) == (2, 1, 0)
        assert sorted(data["files"] + data["validation_files"]) == [
            "sub-0/t1_ras.nii.gz", "sub-1/t1_lps.nii.gz", "sub-2/t1_pir.nii.gz"
        ]  # fmt: skip
        assert len(data["files_sha256"]) == 64
        load_encoder(tmp_path / variant / "encoder")
    stage = json.loads((tmp_path / "dynamics_aligned" / "pretrain.json").read_text())["stages"][-1]
    assert stage["overrides"]["data"] == str(scans) and all(np.isfinite(list(stage["val_metrics"].values())))
    assert "controllability" in capsys.readouterr().out


def test_bad_files_in_a_folder_are_skipped_by_name_or_stop_a_strict_run(scans, caplog):
    (scans / "truncated.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 1, 3), np.float32), np.eye(4)), str(scans / "series.nii.gz"))
    items = user_datalist(scans)
    assert [i["name"] for i in items] == ["sub-0_t1_ras", "sub-1_t1_lps", "sub-2_t1_pir"]
    warned = "\n".join(r.getMessage() for r in caplog.records)
    assert "truncated.nii.gz: not a readable NIfTI" in warned and "series.nii.gz: not a 3D volume" in warned
    with pytest.raises(ValueError, match=r"series\.nii\.gz: not a 3D volume|truncated\.nii\.gz: not a readable"):
        pretraining_datalist("train", data=str(scans), strict=True)


@pytest.mark.parametrize("name", ["lps", "pir"])
def test_reorientation_keeps_every_voxel_at_its_world_position(tmp_path, name):
    """Voxels of a non-RAS file land, after loading, at the same world millimetres (signed: an LPS or flipped
    result would put them on the other side): every value is distinct, so the loaded voxel at a world point must
    rank like the file's voxel at that point (percentile scaling is monotonic)."""
    shape = (30, 28, 26)
    data = (100 + np.random.default_rng(2).permutation(np.prod(shape)) / np.prod(shape)).reshape(shape)
    affine = ORIENTED[name]
    path = tmp_path / f"{name}.nii.gz"
    nib.save(nib.Nifti1Image(data.astype(np.float32), affine), str(path))
    image = EmbeddedVolumed()(user_datalist(path)[0])["image"]
    assert torch.all(torch.diag(image.affine)[:3] > 0)
    loaded = np.stack(np.unravel_index(np.random.default_rng(0).choice(image[0].numel(), 200), image.shape[1:]))
    world = image.affine[:3, :3].double().numpy() @ loaded + image.affine[:3, 3:].double().numpy()
    in_file = np.rint(np.linalg.solve(affine[:3, :3], world - affine[:3, 3:])).astype(int)
    ours = image[0].numpy()[tuple(loaded)]
    theirs = data[tuple(in_file)]
    mid = (ours > 0) & (ours < 1)  # clipped extremes tie
    assert mid.sum() > 150 and np.array_equal(np.argsort(ours[mid]), np.argsort(theirs[mid]))


def test_resampling_brings_every_scan_to_one_voxel_size_in_the_same_world(scans):
    from monai_slicenav.volume import voxel_sizes

    item = user_datalist(scans)[1]  # 1.2 x 1.2 x 1.5 mm, LPS
    kept = LoadVolumed(foreground_label=True)(item)["image"]
    resampled = LoadVolumed(foreground_label=True, resample_mm=2.0)(item)
    image, mask = resampled["image"], resampled["label"]
    assert torch.allclose(voxel_sizes(image.affine).float(), torch.full((3,), 2.0))
    assert torch.allclose(voxel_sizes(kept.affine).float(), torch.tensor([1.2, 1.2, 1.5]))
    extent = [(s * n) for s, n in zip(voxel_sizes(kept.affine).tolist(), kept.shape[1:], strict=True)]
    assert all(abs(2.0 * n - e) <= 2.0 for n, e in zip(image.shape[1:], extent, strict=True))  # the same field
    centre = lambda t: t.affine[:3, :3].double() @ (torch.tensor(t.shape[1:]).double() - 1) / 2 + t.affine[:3, 3]  # noqa: E731
    assert torch.allclose(centre(image), centre(kept), atol=1.0) and mask.shape == image.shape
    with pytest.raises(ValueError, match="resample_mm must be"):
        LoadVolumed(resample_mm=0)
