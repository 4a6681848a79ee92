"""Trajectory files from elsewhere (``--trajectory`` of the dynamics inference) are checked before anything is
rendered: a pose whose rotation is not a rotation, actions that do not lead from pose to pose, non-finite numbers,
and slice centres far outside the volume are refused naming the file; a file as written by the renderer loads."""

import json

import pytest
import torch
from monai.data import MetaTensor

from monai_slicenav.transforms import LoadTrajectoryd, RandSliceTrajectory, trajectory_to_dict


@pytest.fixture
def written(tmp_path):
    """A trajectory.json as the renderer writes it, on a 40^3 volume of 1 mm voxels."""
    volume = MetaTensor(torch.ones(1, 40, 40, 40), affine=torch.eye(4, dtype=torch.float64))
    sampler = RandSliceTrajectory(4, 32, mode="mixed", max_translation=4.0, max_rotation=0.2)
    sampler.set_random_state(0)
    poses, actions = sampler(volume)
    record = trajectory_to_dict(poses, actions, 32)
    path = tmp_path / "trajectory.json"
    path.write_text(json.dumps(record))
    return volume, record, path


def _rewrite(path, record) -> None:
    path.write_text(json.dumps(record))


def test_a_written_trajectory_loads_as_it_was_sampled(written):
    volume, record, path = written
    loaded = LoadTrajectoryd(path)({"image": volume})
    assert torch.allclose(loaded["actions"], torch.tensor(record["actions"]))


@pytest.mark.parametrize(
    "spoil, message",
    [
        (lambda r: r["poses"][2].update(rotation=[[2, 0, 0], [0, 1, 0], [0, 0, 1]]), "pose 2: 'rotation' is not"),
        (lambda r: r["poses"][1].update(rotation=[[-1, 0, 0], [0, 1, 0], [0, 0, 1]]), "pose 1: 'rotation' is not"),
        (lambda r: r["actions"][3].__setitem__(0, r["actions"][3][0] + 5.0), "action 3 does not lead"),
        (lambda r: r["poses"][0].update(spacing_mm=0.0), "pose 0: 'spacing_mm' must be > 0"),
        (lambda r: r["actions"][0].__setitem__(2, float("nan")), "the trajectory holds NaN or Inf"),
    ],
    ids=["scaled", "reflection", "inconsistent", "zero_spacing", "nan"],
)
def test_malformed_trajectories_are_refused_by_name(written, spoil, message):
    _, record, path = written
    spoil(record)
    _rewrite(path, record)
    with pytest.raises(ValueError, match=f"trajectory.json: {message}"):
        LoadTrajectoryd(path)


def test_poses_of_another_scan_are_refused_at_render_time(written):
    volume, record, path = written
    for pose in record["poses"]:
        pose["center_mm"] = [c + 1e6 for c in pose["center_mm"]]  # the same walk, a million mm away
    _rewrite(path, record)
    with pytest.raises(ValueError, match="trajectory.json: pose 0's centre .* far outside the volume"):
        LoadTrajectoryd(path)({"image": volume})
