import math

import pytest
import torch
from scipy.spatial.transform import Rotation

from monai_slicenav.geometry import (
    Pose,
    apply_action,
    as_slice_size,
    axis_angle_to_matrix,
    canonical_rotation,
    compose_actions,
    invert_action,
    matrix_to_axis_angle,
    relative,
    slice_points,
)


def random_poses(n: int, seed: int, dtype: torch.dtype = torch.float32) -> Pose:
    gen = torch.Generator().manual_seed(seed)
    rotation = torch.from_numpy(Rotation.random(n, random_state=seed).as_matrix()).to(dtype)
    center = (torch.rand(n, 3, generator=gen) - 0.5) * 200  # mm, head-sized
    spacing = 0.5 + 2.5 * torch.rand(n, generator=gen)
    return Pose(center.to(dtype), rotation, spacing.to(dtype))


def assert_pose_close(a: Pose, b: Pose, atol: float) -> None:
    torch.testing.assert_close(a.center, b.center, atol=atol * 100, rtol=0)  # mm values up to ~100
    torch.testing.assert_close(a.rotation, b.rotation, atol=atol, rtol=0)
    torch.testing.assert_close(a.spacing, b.spacing, atol=atol, rtol=0)


class TestRotations:
    def test_exp_matches_scipy(self):
        vectors = torch.from_numpy(Rotation.random(64, random_state=1).as_rotvec())
        expected = torch.from_numpy(Rotation.from_rotvec(vectors.numpy()).as_matrix())
        torch.testing.assert_close(axis_angle_to_matrix(vectors), expected, atol=1e-12, rtol=0)

    @pytest.mark.parametrize("angle", [0.0, 1e-8, 1e-4, 0.5, 2.0, math.pi - 1e-3, math.pi - 1e-6])
    def test_log_inverts_exp(self, angle):
        gen = torch.Generator().manual_seed(0)
        axes = torch.nn.functional.normalize(torch.randn(32, 3, generator=gen, dtype=torch.float64), dim=-1)
        vectors = axes * angle
        recovered = matrix_to_axis_angle(axis_angle_to_matrix(vectors))
        torch.testing.assert_close(axis_angle_to_matrix(recovered), axis_angle_to_matrix(vectors), atol=1e-9, rtol=0)
        if angle < math.pi - 1e-3:
            torch.testing.assert_close(recovered, vectors, atol=1e-9, rtol=0)

    def test_log_at_exactly_pi(self):
        rotation = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
        vector = matrix_to_axis_angle(rotation)
        assert float(vector.norm()) == pytest.approx(math.pi)
        torch.testing.assert_close(axis_angle_to_matrix(vector), rotation, atol=1e-12, rtol=0)

    def test_small_rotation_precise_in_float32(self):
        vector = torch.tensor([1e-5, -2e-5, 3e-5])
        torch.testing.assert_close(matrix_to_axis_angle(axis_angle_to_matrix(vector)), vector, atol=1e-9, rtol=0)

    @pytest.mark.parametrize("name", ["axial", "coronal", "sagittal"])
    def test_canonical_rotations_are_proper(self, name):
        rotation = canonical_rotation(name, dtype=torch.float64)
        torch.testing.assert_close(rotation.T @ rotation, torch.eye(3, dtype=torch.float64))
        assert float(torch.linalg.det(rotation)) == pytest.approx(1.0)

    def test_canonical_normals(self):
        assert canonical_rotation("axial")[:, 2].tolist() == [0.0, 0.0, 1.0]
        assert canonical_rotation("coronal")[:, 2].tolist() == [0.0, -1.0, 0.0]
        assert canonical_rotation("sagittal")[:, 2].tolist() == [1.0, 0.0, 0.0]

    def test_unknown_orientation(self):
        with pytest.raises(ValueError, match="Unknown orientation 'oblique'"):
            canonical_rotation("oblique")


class TestActions:
    def test_round_trip_float32(self):
        p0, p1 = random_poses(256, seed=0), random_poses(256, seed=1)
        assert_pose_close(apply_action(p0, relative(p0, p1)), p1, atol=1e-5)

    def test_relative_of_applied_action(self):
        p0 = random_poses(128, seed=2, dtype=torch.float64)
        gen = torch.Generator().manual_seed(3)
        action = torch.randn(128, 7, generator=gen, dtype=torch.float64) * torch.tensor([5, 5, 5, 0.3, 0.3, 0.3, 0.1])
        torch.testing.assert_close(relative(p0, apply_action(p0, action)), action, atol=1e-9, rtol=0)

    def test_zero_action_is_identity(self):
        p0 = random_poses(16, seed=4)
        moved = apply_action(p0, torch.zeros(16, 7))
        assert torch.equal(moved.center, p0.center)
        torch.testing.assert_close(moved.rotation, p0.rotation, atol=0, rtol=0)
        assert torch.equal(moved.spacing, p0.spacing)
        assert float(relative(p0, p0).abs().max()) < 1e-6

    def test_translation_is_in_pose_frame(self):
        pose = Pose.create(center=[10.0, 20.0, 30.0], rotation="sagittal", spacing=2.0)
        moved = apply_action(pose, torch.tensor([0.0, 0.0, 5.0, 0, 0, 0, math.log(1.5)]))
        # moving 5 mm along a sagittal slice's normal (+R) changes x only; spacing scales by exp(delta log s)
        torch.testing.assert_close(moved.center, torch.tensor([15.0, 20.0, 30.0]))
        assert float(moved.spacing) == pytest.approx(3.0)

    def test_composition_and_inverse(self):
        gen = torch.Generator().manual_seed(5)
        scale = torch.tensor([5, 5, 5, 0.4, 0.4, 0.4, 0.2], dtype=torch.float64)
        a, b = (torch.randn(64, 7, generator=gen, dtype=torch.float64) * scale for _ in range(2))
        p0 = random_poses(64, seed=6, dtype=torch.float64)
        two_steps = apply_action(apply_action(p0, a), b)
        assert_pose_close(apply_action(p0, compose_actions(a, b)), two_steps, atol=1e-9)
        torch.testing.assert_close(compose_actions(a, invert_action(a)), torch.zeros_like(a), atol=1e-9, rtol=0)
        assert_pose_close(apply_action(apply_action(p0, a), invert_action(a)), p0, atol=1e-9)

    def test_bad_action_shape(self):
        with pytest.raises(ValueError, match="7 values"):
            apply_action(random_poses(2, seed=0), torch.zeros(2, 6))


class TestPose:
    def test_pack_round_trip(self):
        poses = random_poses(5, seed=7)
        packed = poses.as_tensor()
        assert packed.shape == (5, 13)
        assert_pose_close(Pose.from_tensor(packed), poses, atol=0)

    def test_indexing(self):
        poses = random_poses(5, seed=8)
        assert torch.equal(poses[2].center, poses.center[2])
        assert poses[1:3].batch_shape == (2,)

    def test_shape_mismatch(self):
        with pytest.raises(ValueError, match="same leading dims"):
            Pose(torch.zeros(4, 3), torch.eye(3).expand(5, 3, 3), torch.ones(4))
        with pytest.raises(ValueError, match="13 values"):
            Pose.from_tensor(torch.zeros(3, 12))


class TestSlicePoints:
    def test_matches_design_formula(self):
        pose = random_poses(3, seed=9, dtype=torch.float64)
        h, w = 5, 7
        points = slice_points(pose, (h, w))
        assert points.shape == (3, h, w, 3)
        for b in range(3):
            for i, j in [(0, 0), (4, 6), (2, 3), (1, 5)]:
                u, v = pose.rotation[b, :, 0], pose.rotation[b, :, 1]
                expected = pose.center[b] + pose.spacing[b] * ((j - (w - 1) / 2) * u + (i - (h - 1) / 2) * v)
                torch.testing.assert_close(points[b, i, j], expected)

    def test_centre_pixel_of_odd_slice_is_centre(self):
        pose = random_poses(4, seed=10)
        torch.testing.assert_close(slice_points(pose, (9, 9))[:, 4, 4], pose.center)

    @pytest.mark.parametrize("size", [(0, 4), (3,), (2, 2, 2), -1])
    def test_bad_size(self, size):
        with pytest.raises(ValueError, match="spatial_size"):
            as_slice_size(size)
