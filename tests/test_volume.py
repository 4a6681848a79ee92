import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import ScaleIntensityRangePercentiles

from monai_slicenav.volume import (
    as_volume,
    check_affine,
    foreground_box,
    scale_intensity,
    voxel_sizes,
    voxel_slice_pose,
)


def test_foreground_box_matches_mask_reference():
    gen = torch.Generator().manual_seed(0)
    data = torch.zeros(2, 20, 17, 13)
    data[0, 3:9, 4:6, 2:11] = 1.0 + torch.rand(6, 2, 9, generator=gen)
    data[1, 12, 15, 7] = 0.7  # a single voxel in the second channel extends the box
    lo, hi = foreground_box(data, threshold=0.5)
    mask = (data > 0.5).any(0)
    index = torch.nonzero(mask)
    assert lo.tolist() == index.min(0).values.tolist() == [3, 4, 2]
    assert hi.tolist() == index.max(0).values.tolist() == [12, 15, 10]


def test_foreground_box_integer_labels():
    labels = torch.zeros(1, 6, 6, 6, dtype=torch.int64)
    labels[0, 1, 2, 3] = 4
    lo, hi = foreground_box(labels)
    assert lo.tolist() == hi.tolist() == [1, 2, 3]


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_foreground_box_reports_non_finite(value):
    data = torch.ones(1, 5, 5, 5)
    data[0, 2, 3, 4] = value
    with pytest.raises(ValueError, match="scan: the volume holds NaN or Inf"):
        foreground_box(data, name="scan")


def test_empty_foreground_message_gives_range():
    with pytest.raises(ValueError, match=r"empty foreground.*threshold 2.0.*\[0.0, 1.0\]"):
        foreground_box(torch.linspace(0, 1, 64).reshape(1, 4, 4, 4), threshold=2.0)


def test_as_volume_keeps_affine_and_dtype():
    affine = torch.diag(torch.tensor([2.0, -1.0, 3.0, 1.0]))
    data, out_affine = as_volume(MetaTensor(torch.zeros(1, 2, 2, 2, dtype=torch.int16), affine=affine))
    assert type(data) is torch.Tensor and data.dtype == torch.int16
    assert out_affine.dtype == torch.float64 and torch.equal(out_affine, affine.double())
    assert voxel_sizes(out_affine).tolist() == [2.0, 1.0, 3.0]


@pytest.mark.parametrize(
    "affine, match",
    [
        (torch.eye(3), r"\(4, 4\) affine"),
        (torch.full((4, 4), float("nan")), "NaN or Inf"),
        (torch.diag(torch.tensor([1.0, 1.0, 0.0, 1.0])), "zero voxel spacing"),
    ],
)
def test_check_affine_errors(affine, match):
    with pytest.raises(ValueError, match=match):
        check_affine(affine)


def test_voxel_slice_pose_rejects_anisotropic_plane():
    with pytest.raises(ValueError, match="In-plane voxel sizes differ"):
        voxel_slice_pose(torch.diag(torch.tensor([1.0, 2.0, 3.0, 1.0])), (4, 4, 4), axis=2, index=0)
    with pytest.raises(ValueError, match="axis must be"):
        voxel_slice_pose(torch.eye(4), (4, 4, 4), axis=3, index=0)


def test_scale_intensity_is_monai_percentile_rule_and_keeps_the_affine():
    image = MetaTensor(torch.randn(1, 40, 50, 30).exp(), affine=torch.diag(torch.tensor([2.0, 3.0, 4.0, 1.0])))
    scaled = scale_intensity(image)
    reference = ScaleIntensityRangePercentiles(0.5, 99.5, b_min=0.0, b_max=1.0, clip=True)(image)
    torch.testing.assert_close(scaled.as_tensor(), reference.as_tensor().float(), atol=1e-3, rtol=0)
    assert isinstance(scaled, MetaTensor) and torch.equal(scaled.affine, image.affine)
    assert float(scaled.min()) == 0.0 and float(scaled.max()) == 1.0
    assert 0.004 <= float((scaled == 1.0).float().mean()) <= 0.006  # the top 0.5 % saturates
    assert torch.equal(scale_intensity(torch.full((1, 4, 4, 4), 3.0)), torch.zeros(1, 4, 4, 4))


@pytest.mark.parametrize("percentiles, match", [((99.5, 0.5), "lower < upper"), ((0.0, 101.0), "<= 100")])
def test_scale_intensity_rejects_bad_percentiles(percentiles, match):
    with pytest.raises(ValueError, match=match):
        scale_intensity(torch.rand(1, 4, 4, 4), percentiles)
