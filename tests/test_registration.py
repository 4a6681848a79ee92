"""Registration: folding measure, displacement resampling, warping and recovery of known deformations."""

import csv
import json
from pathlib import Path
from unittest.mock import patch

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import verify_metadata

from monai_slicenav.downstream.lift3d import Lift3D
from monai_slicenav.downstream.registration import (
    RegistrationConfig,
    _resize_ddf,
    intensity_levels,
    negative_jacobian_fraction,
    register,
    warp_volume,
)
from monai_slicenav.downstream.registration_run import (
    compare_similarities,
    default_pairs,
    file_pair,
    load_pair,
    run_registration,
)
from monai_slicenav.encoders import ContextEncoder, SliceEncoder, training_contract
from monai_slicenav.export import export_encoder
from monai_slicenav.networks import TokenizerConfig

from .helpers import SCHEMA, configs_dir, run_workflow
from .packaged_data import needs_packaged_data

CONFIGS = configs_dir("slicenav_registration")


def test_negative_jacobian_fraction():
    assert negative_jacobian_fraction(torch.zeros(1, 3, 8, 8, 8)) == 0.0
    x = torch.arange(8.0)[:, None, None].expand(8, 8, 8)
    mirror = torch.zeros(1, 3, 8, 8, 8)
    mirror[0, 0] = -2 * x  # x -> -x: determinant -1 everywhere
    assert negative_jacobian_fraction(mirror) == 1.0
    half = mirror.clone()
    half[0, 0, 4:] = 0
    mask = torch.zeros(1, 1, 8, 8, 8, dtype=torch.bool)
    mask[0, 0, :3] = True
    assert negative_jacobian_fraction(half, mask) == 1.0


def test_resized_displacements_keep_their_physical_length():
    coarse = torch.ones(1, 3, 4, 4, 4)
    fine = _resize_ddf(coarse, (8, 8, 16))
    torch.testing.assert_close(fine[0, :, 3, 3, 3], torch.tensor([2.0, 2.0, 4.0]))


def test_warp_by_a_whole_voxel_shift():
    labels = torch.zeros(1, 1, 8, 8, 8, dtype=torch.int64)
    labels[0, 0, 2:4, 2:4, 2:4] = 3
    ddf = torch.zeros(1, 3, 8, 8, 8)
    ddf[:, 0] = 1.0  # each voxel samples the moving image one voxel further along x
    warped = warp_volume(labels, ddf, mode="nearest")
    assert torch.equal(warped[0, 0, 1:3, 2:4, 2:4], torch.full((2, 2, 2), 3))
    assert int((warped == 3).sum()) == 8 and warped.dtype == torch.int64


def test_intensity_registration_recovers_a_translation():
    grid = torch.stack(torch.meshgrid(*(torch.arange(32.0),) * 3, indexing="ij"))
    blob = lambda c: torch.exp(-((grid - torch.tensor(c)[:, None, None, None]) ** 2).sum(0) / 30.0)[None, None]  # noqa: E731
    fixed, moving = blob([16.0, 16.0, 16.0]), blob([18.0, 16.0, 15.0])
    ddf = register(intensity_levels(fixed), intensity_levels(moving), (32, 32, 32), "intensity", RegistrationConfig())
    centre = ddf[0, :, 14:19, 14:19, 14:19].mean(dim=(1, 2, 3))
    torch.testing.assert_close(centre, torch.tensor([2.0, 0.0, -1.0]), atol=0.5, rtol=0)
    assert (warp_volume(moving, ddf) - fixed).abs().mean() < 0.3 * (moving - fixed).abs().mean()
    with pytest.raises(ValueError, match="similarity"):
        register(intensity_levels(fixed), intensity_levels(moving), (32, 32, 32), "mutual")


@needs_packaged_data
def test_bundle_comparison_recovers_the_known_deformation(tmp_path):
    torch.manual_seed(0)
    export_encoder(SliceEncoder(TokenizerConfig(channels=(8, 16, 16))), tmp_path / "encoder")
    config = RegistrationConfig(iterations=(40, 30, 20))
    pair = default_pairs()[0]
    records = compare_similarities(tmp_path / "eval", tmp_path / "encoder", 4.0, config, pairs=[pair])
    by_similarity = {r["similarity"]: r for r in records}
    intensity = by_similarity["intensity"]
    assert intensity["mean_dice_after"] > intensity["mean_dice_before"] + 0.03
    assert intensity["negative_jacobian_fraction"] < 0.01  # stated bound: under 1 % of the foreground folds
    assert by_similarity["features"]["negative_jacobian_fraction"] < 0.01
    with open(tmp_path / "eval" / "comparison.csv") as f:
        assert [row["similarity"] for row in csv.DictReader(f)] == ["intensity", "features"]
    fixed_affine = load_pair(pair, 4.0)["affine"].numpy()
    out = tmp_path / "eval" / "colin27_deformed" / "features"
    for name in ("warped_image", "warped_label", "ddf"):
        image = nib.load(str(out / f"{name}.nii.gz"))
        np.testing.assert_allclose(image.affine, fixed_affine, atol=1e-5)
    assert nib.load(str(out / "ddf.nii.gz")).shape[-1] == 3
    record = json.loads((out / "registration.json").read_text())
    assert len(record["dice_after"]) == 5 and record["encoder"] == str(tmp_path / "encoder")


def test_metadata_verifies_offline():
    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(SCHEMA))


def _blob_pair(folder: Path) -> dict[str, Path]:
    """Two NIfTI images (LPS-flipped 2 mm grid) of two labelled blobs (values 3 and 40), the moving one shifted."""
    grid = np.stack(np.meshgrid(*(np.arange(32.0),) * 3, indexing="ij"))
    affine = np.diag([-2.0, -2.0, 2.0, 1.0])
    files = {}
    for role, shift in (("fixed", 0.0), ("moving", 2.0)):
        labels = np.zeros((32, 32, 32), np.int16)
        for value, centre in ((3, (12.0 + shift, 16.0, 16.0)), (40, (21.0 + shift, 15.0, 17.0))):
            inside = ((grid - np.array(centre)[:, None, None, None]) ** 2).sum(0) < 16.0
            labels[inside] = value
        image = (labels > 0).astype(np.float32) + 0.5 * (labels == 40)
        for kind, array in (("image", image), ("label", labels)):
            files[f"{role}_{kind}"] = folder / f"{role}_{kind}.nii.gz"
            nib.save(nib.Nifti1Image(array, affine), files[f"{role}_{kind}"])
    return files


def test_bundle_registers_your_own_files(tmp_path):
    from monai.bundle import ConfigWorkflow

    files = _blob_pair(tmp_path)
    common = {"similarity": "intensity", "spacing_mm": 2.0, "iterations": [30, 30, 20]}
    flow = ConfigWorkflow(
        config_file=str(CONFIGS / "inference.yaml"), workflow_type="infer", bundle_root=str(tmp_path),
        **{k: str(v) for k, v in files.items()}, **common,
    )  # fmt: skip
    run_workflow(flow)
    out = tmp_path / "eval" / "moving_image_to_fixed_image" / "intensity"
    record = json.loads((out / "registration.json").read_text())
    assert record["classes"] == ["3", "40"]
    assert record["mean_dice_before"] < 0.75 and record["mean_dice_after"] > record["mean_dice_before"] + 0.1
    warped = nib.load(str(out / "warped_label.nii.gz"))
    assert set(np.unique(warped.get_fdata()).astype(int)) <= {0, 3, 40}
    assert np.allclose(np.abs(np.diag(warped.affine))[:3], 2.0)  # on the RAS working grid, world-aligned

    unlabelled = {k: str(v) for k, v in files.items() if k.endswith("image")}
    flow = ConfigWorkflow(
        config_file=str(CONFIGS / "inference.yaml"), workflow_type="infer", bundle_root=str(tmp_path / "plain"),
        **unlabelled, **common,
    )  # fmt: skip
    run_workflow(flow)
    plain = tmp_path / "plain" / "eval" / "moving_image_to_fixed_image" / "intensity"
    assert "mean_dice_after" not in json.loads((plain / "registration.json").read_text())
    assert not (plain / "warped_label.nii.gz").exists() and (plain / "ddf.nii.gz").is_file()


def test_file_pair_errors(tmp_path):
    files = _blob_pair(tmp_path)
    with pytest.raises(ValueError, match="both images"):
        file_pair(files["fixed_image"], files["moving_image"], fixed_label=files["fixed_label"])
    with pytest.raises(FileNotFoundError, match="missing.nii.gz does not exist"):
        file_pair(files["fixed_image"], tmp_path / "missing.nii.gz")
    empty = tmp_path / "empty_label.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 32), np.int16), np.diag([-2.0, -2.0, 2.0, 1.0])), empty)
    pair = file_pair(files["fixed_image"], files["moving_image"], empty, empty, name="blank")
    with pytest.raises(ValueError, match="blank: the label maps hold no label other than 0"):
        run_registration(pair, tmp_path / "out", "intensity", config=RegistrationConfig(iterations=(1, 1, 1)))


def test_mutual_information_registers_across_a_non_monotonic_contrast():
    """A blob against a t2_like re-painting of its shifted copy: intensities are no monotonic function of each other
    (t2_like maps 0.25 and 0.75 to the same value), yet mutual information recovers most of the shift."""
    from monai_slicenav.downstream.registration_run import t2_like

    values = torch.tensor([0.0, 0.25, 0.5, 0.75])
    assert torch.allclose(t2_like(values), torch.tensor([0.0, 0.75, 1.0, 0.75]))
    grid = torch.stack(torch.meshgrid(*(torch.arange(32.0),) * 3, indexing="ij"))
    blob = lambda c: torch.exp(-((grid - torch.tensor(c)[:, None, None, None]) ** 2).sum(0) / 60.0)[None, None]  # noqa: E731
    fixed, moving = blob([16.0, 16.0, 16.0]), t2_like(blob([19.0, 16.0, 16.0]))
    ddf = register(intensity_levels(fixed), intensity_levels(moving), (32, 32, 32), "mutual_information",
                   RegistrationConfig(iterations=(80, 60, 40)))  # fmt: skip
    shift = float(ddf[0, 0, 14:19, 14:19, 14:19].mean())
    assert 1.5 < shift < 4.5, shift


def test_synthetic_contrast_paints_intensity_classes_with_random_non_monotonic_values():
    """The benchmark's synthetic re-painting (seed 3) of a ramp: four equal intensity classes, about one painted
    value each (the model's spread is small), zero outside the head, not a monotonic function of the original;
    reproducible by seed, another seed paints otherwise."""
    from monai_slicenav.downstream.registration_run import synthetic_contrast

    ramp = torch.linspace(0, 1, 1000).reshape(1, 1, 10, 10, 10)
    painted = synthetic_contrast(ramp, seed=3)
    assert torch.equal(painted, synthetic_contrast(ramp, seed=3))
    assert not torch.equal(painted, synthetic_contrast(ramp, seed=4))
    assert float(painted[ramp <= 0.02].abs().max()) == 0.0
    inside = ramp[ramp > 0.02]
    edges = torch.quantile(inside, torch.tensor([0.25, 0.5, 0.75]))
    classes = torch.bucketize(ramp, edges)[ramp > 0.02]
    values = painted[ramp > 0.02]
    means = torch.stack([values[classes == k].mean() for k in range(4)])
    spread = max(float(values[classes == k].std()) for k in range(4))
    steps = means.diff()
    assert spread < 0.1 < float(steps.abs().max())  # about one value per class, not one value for all
    assert bool((steps > 0).any()) and bool((steps < 0).any())  # neither increasing nor decreasing


def test_benchmark_pairs_cross_contrasts_and_refuse_an_unknown_one():
    from monai_slicenav.downstream.registration_run import benchmark_pairs, load_pair

    pairs = {p["name"]: p for p in benchmark_pairs()}
    assert {p["moving"].get("contrast") for p in pairs.values()} == {None, "t2_like", "synthetic"}
    assert pairs["mni152_synth_to_colin27"]["fixed"] == pairs["mni152_to_colin27"]["fixed"]
    assert pairs["icbm2009c_t2_to_colin27"]["moving"]["pair"] == "icbm2009c_hcpex"
    assert len(pairs) == 9  # three same-contrast pairs, each also re-painted two ways
    unknown = {**pairs["colin27_deformed"], "moving": {**pairs["colin27_deformed"]["moving"], "contrast": "flair"}}
    with pytest.raises(ValueError, match="unknown contrast 'flair'"):
        load_pair(unknown, spacing_mm=6.0)


@pytest.mark.parametrize("similarity", ["intensity", "mutual_information"])
def test_a_run_without_features_records_no_encoder(tmp_path, similarity):
    """Intensity and mutual-information runs ignore an encoder given beside them, and say so in their record."""
    files = _blob_pair(tmp_path)
    export_encoder(SliceEncoder(TokenizerConfig(channels=(8, 16, 16))), tmp_path / "encoder")
    pair = file_pair(files["fixed_image"], files["moving_image"], name="blobs")
    config = RegistrationConfig(iterations=(1, 1, 1))
    record = run_registration(pair, tmp_path / "out", similarity, tmp_path / "encoder", 2.0, config)
    assert record["encoder"] is None and record["similarity"] == similarity


def test_feature_registration_takes_the_context_option_and_records_it(tmp_path):
    files = _blob_pair(tmp_path)
    torch.manual_seed(0)
    dynamics = {"latent_dim": 4, "grid_size": (4, 4), "max_steps": 8, "patch": 2, "width": 16, "depth": 1, "heads": 2}
    export_encoder(ContextEncoder(TokenizerConfig(channels=(8, 16, 16)), dynamics), tmp_path / "encoder")
    pair = file_pair(files["fixed_image"], files["moving_image"], name="blobs")
    config = RegistrationConfig(iterations=(1, 1, 1), context="bidirectional", context_stride=2)
    seen = []
    original = Lift3D.__init__
    with patch.object(Lift3D, "__init__", lambda self, *a, **k: seen.append(k) or original(self, *a, **k)):
        record = run_registration(pair, tmp_path / "out", "features", tmp_path / "encoder", 2.0, config)
    assert seen and all(k["context"] == "bidirectional" and k["context_stride"] == 2 for k in seen)
    assert record["config"]["context"] == "bidirectional" and record["config"]["context_stride"] == 2
    assert record["encoder"] == str(tmp_path / "encoder")
    with pytest.raises(ValueError, match="context must be one of"):
        RegistrationConfig(context="sideways")
    with pytest.raises(ValueError, match="context_stride >= 1"):
        RegistrationConfig(context_stride=0)


def test_a_pair_is_read_by_the_encoders_contract(tmp_path):
    """The runner reads images as the encoder that sees them was trained (its contract's intensity rule): another
    recorded rule gives other intensities, and a rule the registration losses cannot take is refused."""
    files = _blob_pair(tmp_path)
    pair = file_pair(files["fixed_image"], files["moving_image"])
    torch.manual_seed(0)
    export_encoder(SliceEncoder(TokenizerConfig(channels=(8, 16, 16))), tmp_path / "encoder")
    package = load_pair(pair, 2.0)
    assert torch.equal(load_pair(pair, 2.0, contract=tmp_path / "encoder")["fixed_image"], package["fixed_image"])
    record = {"input": {"contract": training_contract()}}
    record["input"]["contract"]["intensity"]["percentiles"] = [0.0, 99.0]  # blobs of 1 and 1.5 over 0: 1 -> 1
    narrower = load_pair(pair, 2.0, contract=record)["fixed_image"]
    assert float(package["fixed_image"].max()) == float(narrower.max()) == 1.0
    assert float((narrower - package["fixed_image"]).min()) >= 0.0  # a narrower range maps no voxel lower
    assert float((narrower - package["fixed_image"]).max()) > 0.3  # the first blob: 1 instead of 1 / 1.5
    record["input"]["contract"]["intensity"]["range"] = [-1.0, 1.0]
    with pytest.raises(ValueError, match=r"registration scales images to \[0, 1\], clipped"):
        load_pair(pair, 2.0, contract=record)
