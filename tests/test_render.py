import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scipy.ndimage import map_coordinates
from scipy.spatial.transform import Rotation

from monai_slicenav.geometry import Pose, slice_points
from monai_slicenav.transforms import RenderSlices, RenderSlicesd, render_slices
from monai_slicenav.volume import voxel_slice_pose

from .helpers import oblique_affine


def smooth_volume(shape=(20, 24, 18), channels=2, seed=0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, channels, 5, 6, 4, generator=gen)
    return torch.nn.functional.interpolate(coarse, size=shape, mode="trilinear", align_corners=True)[0]


def anisotropic_flipped_affine(normal_axis: int) -> torch.Tensor:
    """In-plane voxels 1.5 mm, 4 mm along ``normal_axis``; axes permuted (non-RAS) and two of them flipped."""
    sizes = [1.5, 1.5, 1.5]
    sizes[normal_axis] = 4.0
    permute_and_flip = torch.tensor([[0.0, -1.0, 0.0], [0.0, 0.0, 1.0], [-1.0, 0.0, 0.0]], dtype=torch.float64)
    affine = torch.eye(4, dtype=torch.float64)
    affine[:3, :3] = permute_and_flip @ torch.diag(torch.tensor(sizes, dtype=torch.float64))
    affine[:3, 3] = torch.tensor([12.0, -40.0, 7.5])
    return affine


def take_plane(data: torch.Tensor, axis: int, index: int) -> torch.Tensor:
    return data.select(axis + 1, index)


class TestAxisAlignedExact:
    @pytest.mark.parametrize("axis", [0, 1, 2])
    @pytest.mark.parametrize("mode", ["bilinear", "nearest"])
    def test_voxel_planes_reproduced(self, axis, mode):
        data = smooth_volume()
        img = MetaTensor(data, affine=anisotropic_flipped_affine(axis))
        for index in (0, 3, data.shape[axis + 1] - 1):
            pose, size = voxel_slice_pose(img.affine, data.shape[1:], axis, index)
            rendered = RenderSlices(size, mode=mode)(
                img, Pose(pose.center[None], pose.rotation[None], pose.spacing[None])
            )
            assert rendered.shape == (1, 2, *size)
            torch.testing.assert_close(rendered[0], take_plane(data, axis, index), atol=2e-6, rtol=0)

    def test_plain_tensor_means_identity_affine(self):
        data = smooth_volume(channels=1)
        pose, size = voxel_slice_pose(torch.eye(4), data.shape[1:], 2, 5)
        rendered = RenderSlices(size)(data, pose.as_tensor()[None])
        torch.testing.assert_close(rendered[0], data[:, :, :, 5], atol=2e-6, rtol=0)

    def test_canonical_axial_view_of_ras_volume(self):
        data = smooth_volume(shape=(16, 16, 10), channels=1)
        x, y = data.shape[1:3]
        # centre of voxel (7.5, 7.5, 4) in a 1 mm RAS volume at the origin
        pose = Pose.create(center=[(x - 1) / 2, (y - 1) / 2, 4.0], rotation="axial", spacing=1.0)
        rendered = RenderSlices((y, x))(data, pose.as_tensor()[None])[0, 0]
        # radiological axial view: rows run anterior -> posterior, columns patient right -> left
        expected = torch.flip(data[0, :, :, 4], dims=(0, 1)).T
        torch.testing.assert_close(rendered, expected, atol=2e-6, rtol=0)

    def test_single_slice_volume(self):
        data = smooth_volume(shape=(12, 10, 1), channels=1)
        img = MetaTensor(data, affine=torch.diag(torch.tensor([0.8, 0.8, 5.0, 1.0])))
        pose, size = voxel_slice_pose(img.affine, data.shape[1:], 2, 0)
        rendered = RenderSlices(size)(img, pose.as_tensor()[None])
        torch.testing.assert_close(rendered[0], data[..., 0], atol=2e-6, rtol=0)


class TestObliqueReference:
    @pytest.mark.parametrize("affine_fn", [oblique_affine, lambda: anisotropic_flipped_affine(1)])
    def test_matches_scipy_map_coordinates(self, affine_fn):
        data = smooth_volume(seed=3)
        affine = affine_fn()
        img = MetaTensor(data, affine=affine)
        gen = torch.Generator().manual_seed(1)
        n = 6
        voxel_centres = torch.rand(n, 3, generator=gen, dtype=torch.float64) * torch.tensor(data.shape[1:]) * 0.8
        centres = voxel_centres @ affine[:3, :3].T + affine[:3, 3]
        rotations = torch.from_numpy(Rotation.random(n, random_state=2).as_matrix())
        spacing = 0.6 + torch.rand(n, generator=gen, dtype=torch.float64)
        poses = Pose(centres.float(), rotations.float(), spacing.float())
        size = (11, 13)
        rendered = RenderSlices(size)(img, poses)

        points = slice_points(Pose(centres, rotations, spacing), size).reshape(-1, 3)
        inverse = torch.linalg.inv(affine)
        voxels = (points @ inverse[:3, :3].T + inverse[:3, 3]).numpy().T  # (3, N)
        for c in range(data.shape[0]):
            expected = map_coordinates(data[c].double().numpy(), voxels, order=1, mode="grid-constant", cval=0.0)
            expected = torch.from_numpy(expected).reshape(n, *size).float()
            torch.testing.assert_close(rendered[:, c], expected, atol=1e-4, rtol=0)

    def test_batched_equals_single(self):
        """Each volume of a batch is sampled at its own points: poses are seeded around each volume's own centre, so
        every slice lies in its field of view, and a batch rendered with the first volume's points would differ."""
        volumes = torch.stack([smooth_volume(seed=s) for s in (4, 5)])
        affines = torch.stack([oblique_affine(), anisotropic_flipped_affine(0)])
        gen = torch.Generator().manual_seed(3)
        centre_voxel = (torch.tensor(volumes.shape[2:], dtype=torch.float64) - 1) / 2
        centres = torch.stack([a[:3, :3] @ centre_voxel + a[:3, 3] for a in affines]).float()  # (2, 3) world mm
        poses = Pose(
            centres[:, None] + torch.randn(2, 3, 3, generator=gen),
            torch.from_numpy(Rotation.random(6, random_state=3).as_matrix()).float().reshape(2, 3, 3, 3),
            torch.ones(2, 3),
        )
        batched, inside = render_slices(volumes, affines, poses, (8, 9), return_mask=True)
        assert bool(inside.all())  # every pixel of every slice is inside its volume
        for b in range(2):
            single = RenderSlices((8, 9))(MetaTensor(volumes[b], affine=affines[b]), poses[b])
            torch.testing.assert_close(batched[b], single, atol=0, rtol=0)  # bit-identical to the single render
        swapped = render_slices(volumes.flip(0), affines, poses, (8, 9))
        assert float((swapped - batched).abs().amax(dim=(1, 2, 3, 4)).min()) > 1e-3


class TestLabelsAndMask:
    def test_nearest_keeps_label_values(self):
        gen = torch.Generator().manual_seed(0)
        labels = torch.randint(0, 5, (1, 4, 5, 3), generator=gen)
        labels = torch.nn.functional.interpolate(labels[None].float(), size=(20, 24, 18), mode="nearest")[0]
        labels = (labels * 7 + 3).to(torch.int64)  # values {3, 10, 17, 24, 31}
        img = MetaTensor(labels, affine=oblique_affine())
        poses = Pose(
            torch.randn(16, 3, generator=gen) * 5,
            torch.from_numpy(Rotation.random(16, random_state=4).as_matrix()).float(),
            0.5 + torch.rand(16, generator=gen),
        )
        rendered = RenderSlices((32, 32), mode="nearest", padding_mode="border")(img, poses)
        assert rendered.dtype == torch.int64
        assert set(rendered.unique().tolist()) <= set(labels.unique().tolist())
        assert len(rendered.unique()) > 1

    def test_mask_marks_field_of_view(self):
        data = torch.ones(1, 10, 10, 10)
        pose = Pose.create(center=[4.5, 4.5, 4.5], rotation="axial", spacing=1.0)
        slices, mask = RenderSlices((20, 20), return_mask=True)(data, pose.as_tensor()[None])
        assert mask.shape == (1, 1, 20, 20) and mask.dtype == torch.bool
        assert int(mask.sum()) == 100  # the 10 x 10 voxel plane, centred in the 20 x 20 slice
        torch.testing.assert_close(slices[0, 0][mask[0, 0]], torch.ones(100), atol=1e-5, rtol=0)
        assert float(slices[~mask.expand_as(slices)].abs().max()) <= 0.5  # outside: zero padding (half at the rim)


class TestInvalidInput:
    @pytest.mark.parametrize(
        "img, error, match",
        [
            (torch.zeros(10, 10, 10), ValueError, "4 dims"),
            (torch.zeros(1, 1, 10, 10, 10), ValueError, "4 dims"),
            (torch.zeros(1, 0, 10, 10), ValueError, "empty"),
            (torch.full((1, 4, 4, 4), float("nan")), ValueError, "NaN or Inf"),
            (torch.tensor([[[[1.0, float("inf")]]]]), ValueError, "NaN or Inf"),
            (
                MetaTensor(torch.zeros(1, 4, 4, 4), affine=torch.diag(torch.tensor([1.0, 0.0, 1.0, 1.0]))),
                ValueError,
                "zero voxel spacing",
            ),
            (
                MetaTensor(
                    torch.zeros(1, 4, 4, 4),
                    affine=torch.tensor([[1.0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]),
                ),
                ValueError,
                "singular",
            ),
            ([[[[0.0]]]], TypeError, "expected a torch.Tensor"),
        ],
    )
    def test_bad_volumes(self, img, error, match):
        pose = Pose.create(center=[0.0, 0.0, 0.0])
        with pytest.raises(error, match=match):
            RenderSlices(4)(img, pose.as_tensor()[None])

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match="mode"):
            RenderSlices(4, mode="bicubic")
        with pytest.raises(ValueError, match="padding_mode"):
            RenderSlices(4, padding_mode="wrap")
        with pytest.raises(ValueError, match="spatial_size"):
            RenderSlices((4, 0))
        bad = Pose.create(center=[0.0, 0.0, 0.0], spacing=0.0)
        with pytest.raises(ValueError, match="strictly positive spacing"):
            RenderSlices(4)(torch.zeros(1, 4, 4, 4), bad.as_tensor()[None])

    def test_volume_smaller_than_slice_is_padded(self):
        data = torch.ones(1, 3, 3, 3)
        pose = Pose.create(center=[1.0, 1.0, 1.0], rotation="coronal", spacing=1.0)
        rendered = RenderSlices(9)(data, pose.as_tensor()[None])
        assert float(rendered[0, 0, 4, 4]) == 1.0 and float(rendered[0, 0, 0, 0]) == 0.0


class TestRenderSlicesd:
    def test_dictionary_rendering(self):
        image = MetaTensor(smooth_volume(channels=1), affine=anisotropic_flipped_affine(2))
        label = MetaTensor((image.as_tensor() > 0.5).float(), affine=image.affine)
        pose, size = voxel_slice_pose(image.affine, image.shape[1:], 2, 4)
        data = {"image": image, "label": label, "poses": pose.as_tensor()[None]}
        out = RenderSlicesd(
            ("image", "label"), size, mode=("bilinear", "nearest"), mask_key="mask", output_keys=("img2d", "seg2d")
        )(data)
        assert set(data) == {"image", "label", "poses"}  # the input dict is not modified
        assert out["image"] is image
        torch.testing.assert_close(out["img2d"][0], image.as_tensor()[..., 4], atol=2e-6, rtol=0)
        assert torch.equal(out["seg2d"][0], label.as_tensor()[..., 4])
        assert bool(out["mask"].all())

    def test_missing_poses(self):
        with pytest.raises(KeyError, match="RandSliceTrajectoryd"):
            RenderSlicesd("image", 8)({"image": torch.zeros(1, 4, 4, 4)})

    def test_error_names_the_key(self):
        with pytest.raises(ValueError, match="label: the volume holds NaN"):
            RenderSlicesd(("image", "label"), 4)(
                {
                    "image": torch.zeros(1, 4, 4, 4),
                    "label": torch.full((1, 4, 4, 4), float("nan")),
                    "poses": Pose.create([0.0, 0.0, 0.0]).as_tensor()[None],
                }
            )


def test_numpy_input_accepted():
    data = np.random.default_rng(0).random((1, 6, 6, 6), dtype=np.float32)
    pose, size = voxel_slice_pose(torch.eye(4), data.shape[1:], 0, 2)
    rendered = RenderSlices(size)(data, pose.as_tensor()[None])
    torch.testing.assert_close(rendered[0], torch.from_numpy(data[:, 2]), atol=2e-6, rtol=0)
