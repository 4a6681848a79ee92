import gzip
import json

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import ScaleIntensityRangePercentiles
from PIL import Image

from monai_slicenav.cli import main
from monai_slicenav.data.phantom import shepp_logan_volume
from monai_slicenav.geometry import apply_action
from monai_slicenav.transforms import RenderSlices
from monai_slicenav.transforms.navigation import trajectory_from_dict


def write_phantom_nifti(path, affine):
    volume = shepp_logan_volume(48).numpy()[0] * 800.0  # MR-like intensity scale
    nib.save(nib.Nifti1Image(volume.astype(np.float32), affine), str(path))
    return volume


def test_render_builtin_example(tmp_path):
    main(["render", "--out", str(tmp_path), "--steps", "5", "--size", "32", "--columns", "3"])
    record = json.loads((tmp_path / "trajectory.json").read_text())
    assert record["image"] == "builtin:shepp_logan" and record["spatial_size"] == [32, 32]
    poses, actions = trajectory_from_dict(record)
    assert poses.batch_shape == (6,) and actions.shape == (5, 7)
    moved = apply_action(poses[:-1], actions)
    torch.testing.assert_close(moved.center, poses.center[1:], atol=1e-4, rtol=0)
    picture = Image.open(tmp_path / "trajectory.png")
    assert picture.mode == "L" and picture.width == 3 * (32 + 4) + 4
    assert picture.height > 2 * 32  # two rows of tiles with captions
    tile = np.asarray(picture)[4 : 4 + 32, 4 : 4 + 32].astype(float)
    assert tile.std() > 10  # the first slice shows anatomy, not an empty frame


def test_render_nifti_file_matches_json(tmp_path):
    affine = np.array([[-1.5, 0, 0, 30.0], [0, 1.5, 0, -20.0], [0, 0, 2.0, 5.0], [0, 0, 0, 1]])
    volume = write_phantom_nifti(tmp_path / "head.nii.gz", affine)
    out = tmp_path / "out"
    main(["render", str(tmp_path / "head.nii.gz"), "--out", str(out), "--steps", "3", "--size", "24", "--seed", "5"])
    record = json.loads((out / "trajectory.json").read_text())
    np.testing.assert_allclose(np.asarray(record["affine"]), affine)
    poses, _ = trajectory_from_dict(record)
    # rebuild the first tile from (volume, poses) and compare with the PNG pixels
    scaled = ScaleIntensityRangePercentiles(0.5, 99.5, 0.0, 1.0, clip=True)(MetaTensor(volume[None], affine=affine))
    first = RenderSlices(24)(scaled, poses[:1])[0, 0].numpy()
    tile = np.asarray(Image.open(out / "trajectory.png"))[4 : 4 + 24, 4 : 4 + 24].astype(float)
    np.testing.assert_allclose(tile, np.clip(first, 0, 1) * 255, atol=1.0)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, "no such file"),
        (lambda p: nib.save(nib.Nifti1Image(np.ones((8, 8), np.float32), np.eye(4)), str(p)), "3D volume"),
        (lambda p: p.write_bytes(gzip.compress(b"\x00" * 40)), "cannot read"),
        (
            lambda p: nib.save(nib.Nifti1Image(np.random.rand(8, 8, 8, 3).astype(np.float32), np.eye(4)), str(p)),
            "3 frames",
        ),
        (lambda p: nib.save(nib.Nifti1Image(np.full((8, 8, 8), np.nan, np.float32), np.eye(4)), str(p)), "NaN"),
    ],
    ids=["missing", "2d", "truncated", "4d", "nan"],
)
def test_render_bad_input_exits_with_message(tmp_path, capsys, make, message):
    path = tmp_path / "bad.nii.gz"
    make(path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "trajectory.png").write_bytes(b"previous result")
    with pytest.raises(SystemExit) as exit_info:
        main(["render", str(path), "--out", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "bad.nii.gz" in err and len(err.strip().splitlines()) == 1  # one line, the file named
    assert (out / "trajectory.png").read_bytes() == b"previous result"  # nothing overwritten


def test_help_lists_the_commands(capsys, monkeypatch):
    monkeypatch.setenv("PAGER", "cat")
    main(["--help"])
    listing = capsys.readouterr().out
    assert all(command in listing for command in ("render", "pretrain", "evaluate", "export", "pack"))
