"""Inputs that used to give silently wrong results (exit 0, a zero field, all-background labels) are refused by
name wherever scans are loaded: NaN voxels, constant images, degenerate voxel sizes, one-voxel sides, and label maps
with non-integer values."""

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import LoadImaged

from monai_slicenav.downstream.registration_run import file_pair, load_pair
from monai_slicenav.transforms import CheckScand, LoadVolumed


def _head() -> np.ndarray:
    data = np.zeros((30, 28, 26), np.float32)
    data[6:24, 5:22, 5:20] = 1 + np.random.default_rng(0).random((18, 17, 15))
    return data


def _with_nan() -> np.ndarray:
    data = _head()
    data[10, 10, 10] = np.nan
    return data


BAD_IMAGES = {
    "nan": (_with_nan, np.eye(4), "NaN or Inf"),
    "constant": (lambda: np.zeros((30, 28, 26), np.float32), np.eye(4), "constant"),
    "tiny_voxels": (_head, np.diag([5e-4, 1.0, 1.0, 1.0]), "under 0.001 mm"),
    "one_voxel_thick": (lambda: _head()[:, :, :1], np.eye(4), "side under 2 voxels"),
}


def _save(path, data, affine=None) -> str:
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return str(path)


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_registration_and_loading_refuse_degenerate_images_by_name(case, tmp_path):
    make, affine, message = BAD_IMAGES[case]
    good, bad = _save(tmp_path / "good.nii.gz", _head()), _save(tmp_path / f"{case}.nii.gz", make(), affine)
    with pytest.raises(ValueError, match=f"{case}.nii.gz.*{message}"):
        load_pair(file_pair(good, bad))
    with pytest.raises(ValueError, match=f"{case}.nii.gz.*{message}"):
        LoadVolumed()({"source": "file", "image": bad})
    with pytest.raises(ValueError, match=f"{case}.nii.gz.*{message}"):  # segmentation inference's chain
        CheckScand("image")(LoadImaged("image", ensure_channel_first=True)({"image": bad}))


def test_non_integer_labels_are_refused_and_integer_ones_pass(tmp_path):
    image = _save(tmp_path / "image.nii.gz", _head())
    labels = np.zeros((30, 28, 26), np.float32)
    labels[6:24, 5:22, 5:20] = 2.0
    whole = _save(tmp_path / "labels.nii.gz", labels)
    labels[6:24, 5:22, 5:20] = 0.3  # would round into the background
    fractional = _save(tmp_path / "fractional.nii.gz", labels)
    with pytest.raises(ValueError, match="fractional.nii.gz: label values must be integers, found 0.3"):
        load_pair(file_pair(image, image, fractional, fractional))
    loaded = load_pair(file_pair(image, image, whole, whole))
    assert set(torch.unique(loaded["fixed_label"]).tolist()) == {0, 2}


def test_a_good_scan_passes_the_check_unchanged(tmp_path):
    path = _save(tmp_path / "good.nii.gz", _head())
    loaded = LoadImaged("image", ensure_channel_first=True)({"image": path})
    checked = CheckScand("image")(dict(loaded))
    assert checked["image"] is loaded["image"]
