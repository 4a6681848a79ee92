import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.networks.layers import median_filter
from monai.transforms import Compose

from monai_slicenav.data import embedded_datalist, synthetic_seed
from monai_slicenav.transforms import (
    RandSliceTrajectoryd,
    RandSynthAppearance,
    RandSynthAppearanced,
    RandSynthLabelEnsembled,
    RenderSlicesd,
    SynthLabelEnsemble,
    SynthLabelEnsembled,
)
from monai_slicenav.transforms.synth_functional import ShapeSource, boundary_median

SMALL = {"spatial_size": 40, "spacing": 2.0, "num_labels": (6, 10)}


def foreground_label_count(label: torch.Tensor) -> int:
    return int((torch.unique(label) > 0).sum())


class TestLabelEnsemble:
    def test_same_seed_same_map_different_seed_differs(self):
        generator = SynthLabelEnsemble(**SMALL)
        first, second, other = generator(11), generator(11), generator(12)
        assert torch.equal(first, second)
        assert not torch.equal(first, other)

    @pytest.mark.parametrize("seed", range(6))
    def test_label_count_in_range_and_consecutive(self, seed):
        label = SynthLabelEnsemble(**SMALL)(seed)
        values = torch.unique(label).tolist()
        assert 6 <= foreground_label_count(label) <= 10
        assert values == list(range(len(values)))  # background 0, then consecutive labels
        assert label.dtype == torch.int64 and label.shape == (1, 40, 40, 40)

    def test_envelope_leaves_background_at_the_corners(self):
        label = SynthLabelEnsemble(**SMALL)(3)[0]
        corners = label[[0, 0, 0, 0, -1, -1, -1, -1], [0, 0, -1, -1, 0, 0, -1, -1], [0, -1, 0, -1, 0, -1, 0, -1]]
        assert corners.tolist() == [0] * 8
        assert float((label > 0).float().mean()) > 0.1

    def test_real_affine(self):
        label = SynthLabelEnsemble(**SMALL)(0)
        expected = torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0], dtype=torch.float64))
        expected[:3, 3] = -39.0  # centre of the 40-voxel grid at the world origin
        torch.testing.assert_close(label.affine, expected)

    def test_bad_options(self):
        with pytest.raises(ValueError, match="num_labels"):
            SynthLabelEnsemble(num_labels=(5, 3))
        with pytest.raises(ValueError, match="spatial_size"):
            SynthLabelEnsemble(spatial_size=4)


def test_boundary_median_equals_monai_median_filter():
    gen = torch.Generator().manual_seed(0)
    coarse = torch.randint(0, 6, (1, 1, 7, 8, 6), generator=gen).float()
    labels = torch.nn.functional.interpolate(coarse, size=(21, 24, 18), mode="nearest")[0, 0].long()
    labels[5, 5, 5] = 9  # an isolated voxel that the median removes
    expected = median_filter(labels[None, None].float(), kernel_size=(3, 3, 3))[0, 0].long()
    cleaned = boundary_median(labels)
    assert torch.equal(cleaned, expected)
    assert int(cleaned[5, 5, 5]) != 9


class TestAppearance:
    def test_two_views_share_the_label_map_and_differ(self):
        chain = Compose(
            [
                SynthLabelEnsembled("label", **SMALL),
                RandSynthAppearanced(("image", "image_view2"), label_key="label"),
            ]
        ).set_random_state(5)
        out = chain({"synth_seed": 42})
        assert torch.equal(out["label"], SynthLabelEnsemble(**SMALL)(42))
        view1, view2 = out["image"], out["image_view2"]
        assert view1.shape == view2.shape == (1, 40, 40, 40) and view1.dtype == torch.float32
        assert float(view1.min()) == 0.0 and float(view1.max()) == 1.0
        assert float((view1 == 1.0).float().mean()) >= 0.004  # scaled as real scans: the top 0.5 % saturates
        assert float((view1 - view2).abs().mean()) > 0.05
        torch.testing.assert_close(view1.affine, out["label"].affine)

    def test_seeded_appearance_reproducible(self):
        label = SynthLabelEnsemble(**SMALL)(1)
        images = [RandSynthAppearance().set_random_state(7)(label) for _ in range(2)]
        assert torch.equal(images[0], images[1])
        assert not torch.equal(images[0], RandSynthAppearance().set_random_state(8)(label))

    def test_labels_are_visible_in_the_image(self):
        label = SynthLabelEnsemble(**SMALL)(2)
        image = RandSynthAppearance(components=1, max_std=0.0, corruption_prob=0.0).set_random_state(0)(label)
        # without corruption and noise, every label is one constant intensity
        for value in torch.unique(label).tolist():
            region = image[label == value]
            assert float(region.max() - region.min()) < 1e-6

    def test_bad_label_input(self):
        with pytest.raises(ValueError, match=r"\(1, X, Y, Z\)"):
            RandSynthAppearance()(torch.zeros(2, 4, 4, 4))
        with pytest.raises(ValueError, match="non-negative"):
            RandSynthAppearance()(-torch.ones(1, 4, 4, 4))


class TestDictionaryTransforms:
    def test_random_label_maps_seeded(self):
        maps = [RandSynthLabelEnsembled("label", **SMALL).set_random_state(3)({})["label"] for _ in range(2)]
        assert torch.equal(maps[0], maps[1])
        other = RandSynthLabelEnsembled("label", **SMALL).set_random_state(4)({})["label"]
        assert not torch.equal(maps[0], other)

    def test_missing_seed(self):
        with pytest.raises(KeyError, match="synth_seed"):
            SynthLabelEnsembled("label", **SMALL)({"name": "x"})
        with pytest.raises(KeyError, match="no label map"):
            RandSynthAppearanced("image")({})

    def test_disk_cache_round_trip(self, tmp_path):
        cached = SynthLabelEnsembled("label", cache_dir=tmp_path, **SMALL)
        first = cached({"synth_seed": 9})["label"]
        files = list(tmp_path.glob("synth_label_*_9.nii.gz"))
        assert len(files) == 1
        stamp = files[0].stat().st_mtime_ns
        second = cached({"synth_seed": 9})["label"]
        assert files[0].stat().st_mtime_ns == stamp  # read back, not regenerated
        assert torch.equal(second.as_tensor(), first.as_tensor()) and second.dtype == torch.int64
        torch.testing.assert_close(second.affine, first.affine)
        other_options = SynthLabelEnsembled("label", cache_dir=tmp_path, **{**SMALL, "num_labels": (3, 4)})
        other_options({"synth_seed": 9})
        assert len(list(tmp_path.glob("synth_label_*_9.nii.gz"))) == 2  # options are part of the cache key


class TestEmbeddedDatalist:
    def test_deterministic_per_index_and_seed(self):
        assert embedded_datalist(4, seed=1) == embedded_datalist(4, seed=1)
        seeds = [item["synth_seed"] for item in embedded_datalist(4, seed=1, include_packaged=False)]
        assert len(set(seeds)) == 4 and seeds[2] == synthetic_seed(1, 2)
        assert seeds != [item["synth_seed"] for item in embedded_datalist(4, seed=2, include_packaged=False)]
        with pytest.raises(ValueError, match="num_synthetic"):
            embedded_datalist(-1)
        with pytest.raises(ValueError, match="empty"):
            embedded_datalist(0, include_packaged=False)

    def test_through_the_navigation_chain(self):
        chain = Compose(
            [
                SynthLabelEnsembled("label", **SMALL),
                RandSynthAppearanced("image"),
                RandSliceTrajectoryd("label", num_steps=4, spatial_size=24, mode="mixed"),
                RenderSlicesd(("image", "label"), 24, mode=("bilinear", "nearest")),
            ]
        ).set_random_state(0)
        for item in embedded_datalist(2, seed=0, include_packaged=False):
            out = chain(item)
            assert out["image"].shape == (5, 1, 24, 24) and bool(torch.isfinite(out["image"]).all())
            assert float(out["image"].std()) > 0.01
            assert set(torch.unique(out["label"]).tolist()) <= set(range(11))
            assert isinstance(out["poses"], torch.Tensor) and out["poses"].shape == (5, 13)


def test_metatensor_passthrough_of_numpy_label():
    label = MetaTensor(torch.from_numpy(np.zeros((1, 8, 8, 8), np.float32)))
    image = RandSynthAppearance(corruption_prob=0.0).set_random_state(0)(label)
    assert image.shape == (1, 8, 8, 8)


class TestAtlasShapes:
    def test_shape_source_boxes(self):
        labels = torch.zeros(10, 12, 9)
        labels[2:5, 3:4, 1:8] = 3
        labels[7, 8, 2] = 5
        source = ShapeSource.from_labels(labels)
        assert source.values.tolist() == [3, 5]
        assert source.boxes.tolist() == [[2, 3, 1, 4, 3, 7], [7, 8, 2, 7, 8, 2]]
        region = source.region(np.random.RandomState(0))
        assert region.shape[:2] == (1, 1) and bool((region == 1).all())

    def test_atlas_regions_become_shapes(self, tmp_path):
        atlas = np.zeros((20, 20, 20), np.int16)
        atlas[5:15, 5:15, 5:15] = 7  # one cube-shaped region
        path = tmp_path / "atlas.nii.gz"
        nib.save(nib.Nifti1Image(atlas, np.eye(4)), str(path))
        options = {"spatial_size": 64, "num_labels": (1, 1), "envelope": False, "deform_mm": 0.0, "clean": False}
        ellipsoid = SynthLabelEnsemble(blob_amplitude=0.0, **options)(4)
        cube = SynthLabelEnsemble(shape_sources=[path], atlas_fraction=1.0, **options)(4)
        # same centre and semi-axes: a stretched cube fills 8 / (4 pi / 3) = 1.91 times an ellipsoid's volume
        ratio = float((cube > 0).sum()) / float((ellipsoid > 0).sum())
        assert 1.6 < ratio < 2.1
        assert torch.equal(cube, SynthLabelEnsemble(shape_sources=[path], atlas_fraction=1.0, **options)(4))

    def test_missing_shape_source(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="shape source"):
            SynthLabelEnsemble(shape_sources=[tmp_path / "none.nii.gz"], **SMALL)(0)
