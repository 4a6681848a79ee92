import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.transforms import Compose

from monai_slicenav.geometry import CANONICAL_ORIENTATIONS, Pose, apply_action, canonical_rotation, relative
from monai_slicenav.transforms import RandSliceTrajectory, RandSliceTrajectoryd, RenderSlices, RenderSlicesd
from monai_slicenav.volume import foreground_box

from .helpers import oblique_affine


def blob_volume(shape=(40, 36, 30), box=((8, 30), (5, 20), (10, 26)), affine=None) -> MetaTensor:
    data = torch.zeros(1, *shape)
    (x0, x1), (y0, y1), (z0, z1) = box
    data[0, x0 : x1 + 1, y0 : y1 + 1, z0 : z1 + 1] = 1.0 + torch.rand(x1 - x0 + 1, y1 - y0 + 1, z1 - z0 + 1)
    return MetaTensor(data, affine=affine if affine is not None else torch.diag(torch.tensor([1.2, 1.0, 2.0, 1.0])))


def sample(seed=0, img=None, **kwargs):
    kwargs = {"num_steps": 24, "spatial_size": 32, **kwargs}
    sampler = RandSliceTrajectory(**kwargs)
    sampler.set_random_state(seed)
    return sampler(blob_volume() if img is None else img)


def centres_in_voxels(img: MetaTensor, poses: Pose) -> torch.Tensor:
    inverse = torch.linalg.inv(img.affine.double())
    return poses.center.double() @ inverse[:3, :3].T + inverse[:3, 3]


class TestReproducibility:
    @pytest.mark.parametrize("mode", ["scroll", "tilt", "zoom", "mixed"])
    def test_same_seed_same_trajectory(self, mode):
        (p1, a1), (p2, a2) = sample(7, mode=mode), sample(7, mode=mode)
        assert torch.equal(p1.as_tensor(), p2.as_tensor()) and torch.equal(a1, a2)
        p3, a3 = sample(8, mode=mode)
        assert not torch.equal(a1, a3)

    def test_dictionary_seeded_through_compose(self):
        img = blob_volume()

        def run(seed):
            chain = Compose([RandSliceTrajectoryd("image", num_steps=5, spatial_size=16), RenderSlicesd("image", 16)])
            chain.set_random_state(seed)
            return chain({"image": img})

        first, second, other = run(3), run(3), run(4)
        assert torch.equal(first["poses"], second["poses"]) and torch.equal(first["image"], second["image"])
        assert not torch.equal(first["poses"], other["poses"])
        assert first["poses"].shape == (6, 13) and first["actions"].shape == (5, 7)
        assert first["image"].shape == (6, 1, 16, 16)

    def test_slices_rebuilt_from_volume_and_poses(self):
        img = blob_volume()
        d = RandSliceTrajectoryd("image", num_steps=6, spatial_size=20).set_random_state(1)({"image": img})
        out = RenderSlicesd("image", 20, output_keys="slices")(d)
        assert torch.equal(out["slices"], RenderSlices(20)(img, Pose.from_tensor(d["poses"])))
        assert out["image"] is img


class TestGeometry:
    @pytest.mark.parametrize("mode", ["scroll", "tilt", "zoom", "mixed"])
    def test_actions_link_consecutive_poses(self, mode):
        poses, actions = sample(2, mode=mode, start_orientation="random")
        predicted = apply_action(poses[:-1], actions)
        torch.testing.assert_close(predicted.center, poses.center[1:], atol=1e-4, rtol=0)
        torch.testing.assert_close(predicted.rotation, poses.rotation[1:], atol=1e-5, rtol=0)
        torch.testing.assert_close(predicted.spacing, poses.spacing[1:], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(relative(poses[:-1], poses[1:]), actions, atol=1e-4, rtol=0)

    @pytest.mark.parametrize("seed", range(5))
    def test_step_bounds(self, seed):
        bounds = {"max_translation": 1.5, "max_rotation": 0.04, "max_log_zoom": 0.03}
        poses, actions = sample(seed, num_steps=60, **bounds)
        assert float(actions[:, :3].norm(dim=1).max()) <= 1.5 + 1e-5
        assert float(actions[:, 3:6].norm(dim=1).max()) <= 0.04 + 1e-6
        assert float(actions[:, 6].abs().max()) <= 0.03 + 1e-6
        assert float(actions[:, :3].norm(dim=1).max()) > 0.5  # the walk actually moves

    def test_jumps_cover_several_steps_and_keep_other_seeds(self):
        bounds = {"max_translation": 1.5, "max_rotation": 0.04, "max_log_zoom": 0.03, "momentum": 0.0}
        _, plain = sample(3, num_steps=60, **bounds)
        _, off = sample(3, num_steps=60, jump_probability=0.0, jump_steps=5, **bounds)
        torch.testing.assert_close(off, plain, atol=0, rtol=0)  # no jumps: the same random stream
        _, jumping = sample(3, num_steps=60, jump_probability=0.3, jump_steps=5, **bounds)
        moves = jumping[:, 3:6].norm(dim=1)
        assert float(moves.max()) <= 5 * 0.04 + 1e-5 and int((moves > 0.04 + 1e-6).sum()) >= 5
        assert float(jumping[:, 6].abs().max()) <= 5 * 0.03 + 1e-6

    @pytest.mark.parametrize("affine", [None, "oblique"])
    def test_scroll_trajectories_move_along_the_normal_only(self, affine):
        img = blob_volume(affine=oblique_affine() if affine else None)
        _, plain = sample(3, img=img, start_orientation="random")
        _, off = sample(3, img=img, start_orientation="random", scroll_probability=0.0, scroll_step=2.0)
        torch.testing.assert_close(off, plain, atol=0, rtol=0)  # no scrolls: the same random stream
        poses, actions = sample(3, img=img, num_steps=40, start_orientation="random", scroll_probability=1.0,
                                scroll_step=2.0)  # fmt: skip
        assert torch.equal(poses.rotation, poses.rotation[:1].expand_as(poses.rotation))
        assert torch.equal(poses.spacing, poses.spacing[:1].expand_as(poses.spacing))
        assert float(actions[:, [0, 1, 3, 4, 5, 6]].abs().max()) == 0.0
        assert set(actions[:, 2].tolist()) <= {2.0, -2.0, 0.0} and set(actions[:, 2].tolist()) & {2.0, -2.0}
        moves = poses.center[1:] - poses.center[:-1]
        normal = poses.rotation[0, :, 2]
        torch.testing.assert_close(moves, actions[:, 2:3] * normal, atol=1e-4, rtol=0)  # one slice spacing a step
        assert int((actions[:, 2] != actions[0, 2]).sum()) > 0  # 40 steps of 2 mm cross the box: it bounces

    def test_scroll_share(self):
        sampler = RandSliceTrajectory(6, 16, scroll_probability=0.3).set_random_state(0)
        frame = sampler.frame(blob_volume())
        scrolls = 0
        for _ in range(400):
            sampler.randomize()
            _, actions = sampler.walk(frame)
            scrolls += bool(actions[:, 3:].abs().max() == 0)
        assert 0.22 < scrolls / 400 < 0.38

    @pytest.mark.parametrize("seed", range(6))
    @pytest.mark.parametrize("affine", [None, "oblique"])
    def test_centres_stay_in_foreground_box(self, seed, affine):
        img = blob_volume(box=((15, 20), (10, 14), (12, 16)), affine=oblique_affine() if affine else None)
        lo, hi = foreground_box(img.as_tensor())
        poses, actions = sample(seed, img=img, num_steps=80, max_translation=3.0, mode="mixed")
        voxels = centres_in_voxels(img, poses)
        assert bool((voxels >= lo - 1e-4).all() and (voxels <= hi + 1e-4).all())
        assert float(actions[:, :3].abs().sum()) > 0

    def test_zoom_range_respected(self):
        poses, _ = sample(1, num_steps=200, mode="zoom", spacing=2.0, zoom_range=(0.8, 1.25), max_log_zoom=0.05)
        assert float(poses.spacing.min()) >= 1.6 - 1e-5 and float(poses.spacing.max()) <= 2.5 + 1e-5
        assert float(poses.spacing.max() - poses.spacing.min()) > 0.3

    def test_modes_move_only_their_components(self):
        _, scroll = sample(0, mode="scroll")
        assert float(scroll[:, [0, 1, 3, 4, 5, 6]].abs().max()) == 0.0 and float(scroll[:, 2].abs().max()) > 0
        tilt_poses, tilt = sample(0, mode="tilt")
        assert float(tilt[:, [0, 1, 2, 6]].abs().max()) == 0.0
        assert torch.equal(tilt_poses.center, tilt_poses.center[:1].expand(25, 3))
        _, zoom = sample(0, mode="zoom")
        assert float(zoom[:, :6].abs().max()) == 0.0 and float(zoom[:, 6].abs().max()) > 0

    def test_scroll_is_smooth(self):
        big = blob_volume(shape=(80, 80, 80), box=((0, 79), (0, 79), (0, 79)))
        _, actions = sample(0, img=big, mode="scroll", num_steps=400, max_translation=1.0, momentum=0.9)
        steps = actions[:, 2].numpy()
        lag_one = np.corrcoef(steps[:-1], steps[1:])[0, 1]
        assert lag_one > 0.7

    def test_start_orientations(self):
        canonical = {name: canonical_rotation(name) for name in CANONICAL_ORIENTATIONS}
        seen = set()
        for seed in range(12):
            rotation = sample(seed, num_steps=1)[0].rotation[0]
            seen |= {name for name, r in canonical.items() if torch.allclose(rotation, r)}
        assert seen == set(canonical)
        coronal = sample(0, num_steps=1, start_orientation="coronal")[0].rotation[0]
        assert torch.equal(coronal, canonical["coronal"])
        random_rotation = sample(0, num_steps=1, start_orientation="random")[0].rotation[0].double()
        torch.testing.assert_close(
            random_rotation.T @ random_rotation, torch.eye(3, dtype=torch.float64), atol=1e-6, rtol=0
        )
        assert float(torch.linalg.det(random_rotation)) == pytest.approx(1.0, abs=1e-5)

    def test_default_spacing_fits_foreground(self):
        img = blob_volume()  # foreground extents: 23 * 1.2, 16 * 1.0, 17 * 2.0 mm
        poses, _ = sample(0, img=img, spatial_size=(16, 20), mode="tilt")
        assert float(poses.spacing[0]) == pytest.approx(34.0 / 20)
        poses, _ = sample(0, img=img, spatial_size=256, mode="tilt")
        assert float(poses.spacing[0]) == pytest.approx(1.0)  # never finer than the finest voxel


class TestInvalid:
    def test_empty_foreground(self):
        with pytest.raises(ValueError, match="empty foreground"):
            sample(0, img=MetaTensor(torch.zeros(1, 8, 8, 8)))
        with pytest.raises(ValueError, match="empty foreground"):
            sample(0, img=blob_volume(), threshold=5.0)

    def test_invalid_volume_named(self):
        with pytest.raises(ValueError, match="scan: expected a channel-first 3D volume"):
            RandSliceTrajectoryd("scan", num_steps=2, spatial_size=8)({"scan": torch.zeros(8, 8, 8)})

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"num_steps": 0}, "num_steps"),
            ({"mode": "fly"}, "mode"),
            ({"start_orientation": "oblique"}, "start_orientation"),
            ({"spacing": 0.0}, "spacing"),
            ({"zoom_range": (1.2, 2.0)}, "zoom_range"),
            ({"max_rotation": -0.1}, "max_translation, max_rotation"),
            ({"momentum": 1.0}, "momentum"),
            ({"jump_probability": 1.5}, "jump_probability"),
            ({"jump_steps": 0}, "jump_steps"),
            ({"scroll_probability": -0.1}, "scroll_probability"),
            ({"scroll_step": 0.0}, "scroll_step"),
        ],
    )
    def test_bad_arguments(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            RandSliceTrajectory(**{"num_steps": 4, "spatial_size": 8, **kwargs})

    def test_dictionary_needs_one_key(self):
        with pytest.raises(ValueError, match="exactly one reference key"):
            RandSliceTrajectoryd(("image", "label"), num_steps=2, spatial_size=8)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_volume_rejected(value):
    img = blob_volume()
    img[0, 1, 1, 1] = value
    with pytest.raises(ValueError, match="NaN or Inf"):
        sample(0, img=img)


def test_several_trajectories_per_volume():
    img = blob_volume()
    chain = Compose(
        [RandSliceTrajectoryd("image", num_steps=3, spatial_size=12, num_samples=3), RenderSlicesd("image", 12)]
    ).set_random_state(0)
    out = chain({"image": img})
    assert isinstance(out, list) and len(out) == 3
    assert len({tuple(o["poses"][0].tolist()) for o in out}) == 3  # three different trajectories
    for o in out:
        assert torch.equal(o["image"], RenderSlices(12)(img, Pose.from_tensor(o["poses"])))
    loader = DataLoader(Dataset([{"image": img}] * 2, transform=chain), batch_size=2)
    batch = next(iter(loader))
    assert batch["image"].shape == (6, 4, 1, 12, 12)  # 2 volumes x 3 trajectories, flattened into the batch
    with pytest.raises(ValueError, match="num_samples"):
        RandSliceTrajectoryd("image", num_steps=3, spatial_size=12, num_samples=0)
