"""Degenerate inputs that used to give silently wrong results (exit 0, a zero field, all-background labels) are
refused by name wherever scans are loaded: NaN voxels, constant images, degenerate voxel sizes, one-voxel sides,
2D and 4D images (label maps: tests/reliability/test_labels.py)."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.transforms import LoadImaged

from monai_slicenav.downstream.registration_run import file_pair, load_pair
from monai_slicenav.transforms import CheckScand, LoadVolumed

from .harness import handled


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
    if isinstance(affine, str):  # "zero column": an sform whose first column is zero (nibabel will not write one)
        return _zero_column(path, data)
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return str(path)


def _zero_column(path, data) -> str:
    """A NIfTI-1 file whose sform maps the first voxel axis to nothing (0 mm), written by patching the header."""
    path = path.with_name(path.name.removesuffix(".gz"))
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    raw = bytearray(path.read_bytes())
    raw[254:256] = np.int16(1).tobytes()  # sform_code: scanner
    raw[252:254] = np.int16(0).tobytes()  # qform_code: unknown, so the sform is used
    for offset, row in zip((280, 296, 312), np.eye(4)[:3], strict=True):  # srow_x, srow_y, srow_z
        row = row.copy()
        row[0] = 0.0
        raw[offset : offset + 16] = row.astype(np.float32).tobytes()
    path.write_bytes(bytes(raw))
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


def test_a_good_scan_passes_the_check_unchanged(tmp_path):
    path = _save(tmp_path / "good.nii.gz", _head())
    loaded = LoadImaged("image", ensure_channel_first=True)({"image": path})
    checked = CheckScand("image")(dict(loaded))
    assert checked["image"] is loaded["image"]


KLASS = "degenerate inputs"
ENTRY_CASES = {
    "constant": (lambda: np.zeros((30, 28, 26), np.float32), np.eye(4), "constant"),
    "tiny_voxels": (_head, np.diag([5e-4, 1.0, 1.0, 1.0]), "under 0.001 mm"),
    "zero_spacing": (_head, "zero column", "zero voxel spacing"),
    "one_voxel_thick": (lambda: _head()[:, :, :1], np.eye(4), "side under 2 voxels|not a valid 3D|3D"),
    "two_dimensional": (lambda: _head()[:, :, 0], np.eye(4), "3D|dimension"),
}


@pytest.mark.parametrize("case", sorted(ENTRY_CASES))
def test_registration_bundle_refuses_degenerate_moving_images(case, tmp_path):
    from monai.bundle import ConfigWorkflow

    from ..helpers import configs_dir, run_workflow

    make, affine, message = ENTRY_CASES[case]
    fixed, moving = _save(tmp_path / "fixed.nii.gz", _head()), _save(tmp_path / f"{case}.nii.gz", make(), affine)
    flow = ConfigWorkflow(config_file=str(configs_dir("slicenav_registration") / "inference.yaml"),
                          workflow_type="infer", bundle_root=str(tmp_path), fixed_image=fixed, moving_image=moving,
                          similarity="intensity", iterations=[1, 1, 1])  # fmt: skip
    handled(KLASS, "slicenav_registration inference", case, tmp_path, lambda: run_workflow(flow),
            f"{case}.nii(.gz)?.*({message})")  # fmt: skip


@pytest.mark.parametrize("case", sorted(ENTRY_CASES))
def test_render_refuses_degenerate_images(case, tmp_path, capsys):
    from monai_slicenav.cli import main

    make, affine, message = ENTRY_CASES[case]
    scan = _save(tmp_path / f"{case}.nii.gz", make(), affine)
    run = lambda: main(["render", scan, "--out", str(tmp_path / "out")])  # noqa: E731
    handled(KLASS, "slicenav render", case, tmp_path, run, f"{case}.nii(.gz)?: .*({message})", capsys)


def test_render_refuses_a_4d_series(tmp_path, capsys):
    from monai_slicenav.cli import main

    scan = _save(tmp_path / "series.nii.gz", np.stack([_head()] * 3, axis=-1))
    run = lambda: main(["render", scan, "--out", str(tmp_path / "out")])  # noqa: E731
    handled(KLASS, "slicenav render", "4D series", tmp_path, run, r"series\.nii\.gz: 3 frames", capsys)


def _truncated(path) -> str:
    good = _save(path.with_name("whole.nii.gz"), _head())
    data = Path(good).read_bytes()
    Path(good).unlink()
    path.write_bytes(data[: len(data) // 2])
    return str(path)


@pytest.mark.parametrize("case", ["truncated", "series_4d", "constant"])
def test_segmentation_inference_refuses_unusable_images_by_name(tmp_path, case):
    from ..helpers import bundle_workflow, run_workflow
    from .inputs import segmentation_bundle

    bundle = segmentation_bundle(tmp_path / "bundle")
    path = tmp_path / f"{case}.nii.gz"
    scan = {
        "truncated": lambda: _truncated(path),
        "series_4d": lambda: _save(path, np.stack([_head()] * 3, axis=-1)),
        "constant": lambda: _save(path, np.zeros((30, 28, 26), np.float32)),
    }[case]()
    says = {
        "truncated": "cannot read the image",
        "series_4d": "3 frames or channels",
        "constant": "the image is constant",
    }[case]
    flow = bundle_workflow("slicenav_segmentation", bundle, config="inference.yaml", image=scan)
    handled(KLASS, "slicenav_segmentation inference", case, tmp_path, lambda: run_workflow(flow),
            f"{case}.nii.gz: {says}")  # fmt: skip


def test_registration_refuses_a_truncated_file_by_name(tmp_path):
    from monai.bundle import ConfigWorkflow

    from ..helpers import configs_dir, run_workflow

    fixed, moving = _save(tmp_path / "fixed.nii.gz", _head()), _truncated(tmp_path / "truncated.nii.gz")
    flow = ConfigWorkflow(config_file=str(configs_dir("slicenav_registration") / "inference.yaml"),
                          workflow_type="infer", bundle_root=str(tmp_path), fixed_image=fixed, moving_image=moving,
                          similarity="intensity", iterations=[1, 1, 1])  # fmt: skip
    handled(KLASS, "slicenav_registration inference", "truncated", tmp_path, lambda: run_workflow(flow),
            r"truncated\.nii\.gz: cannot read the image")  # fmt: skip
