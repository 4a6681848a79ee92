"""Controllability figures: the in-plane warp reference, the meter's bookkeeping, a model blind to its actions."""

import math
from pathlib import Path

import pytest
import torch

from monai_slicenav.geometry import Pose, apply_action
from monai_slicenav.networks import SliceNavigator, SliceTokenizer
from monai_slicenav.transforms import render_slices
from monai_slicenav.workflows.controllability import METRIC_NAMES, ControllabilityMeter, inplane_warp

from .navigators import bundle_regime, rendered_trajectories, train_dynamics

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"


def smooth_volume(size: int = 40) -> torch.Tensor:
    coarse = torch.rand(1, 1, 6, 6, 6, generator=torch.Generator().manual_seed(0))
    return torch.nn.functional.interpolate(coarse, size=(size,) * 3, mode="trilinear", align_corners=True)[0]


def test_zero_action_warp_is_the_identity():
    slices = torch.rand(2, 3, 1, 16, 12)
    warped = inplane_warp(slices, torch.zeros(2, 3, 7), torch.full((2, 3), 1.7))
    torch.testing.assert_close(warped, slices, atol=1e-6, rtol=0)


def test_inplane_moves_warp_like_rendering_the_next_pose():
    """Shift, in-plane rotation and zoom of an axial slice: warping the current render matches rendering the
    next pose (inside the field of view, up to the bilinear resampling of a smooth volume)."""
    volume = smooth_volume()
    pose = Pose.create([20.0, 20.0, 20.0], "axial", 0.8)
    actions = torch.tensor(
        [
            [3.0, -2.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # in-plane shift (mm)
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.3, 0.0],  # rotation about the normal
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.2],  # zoom out
        ]
    )
    poses = Pose(pose.center.expand(1, 3, 3), pose.rotation.expand(1, 3, 3, 3), pose.spacing.expand(1, 3))
    current = render_slices(volume[None], torch.eye(4), poses, (24, 24))[0]
    following = render_slices(volume[None], torch.eye(4), apply_action(poses, actions[None]), (24, 24))[0]
    warped = inplane_warp(current, actions, poses.spacing[0])
    inner = (slice(None), slice(None), slice(6, 18), slice(6, 18))
    error = (warped - following)[inner].abs()
    assert float(error.max()) < 0.03 and float(error.mean()) < 0.003
    assert float((current - following)[inner].abs().max()) > 0.05  # the moves change the slice


def test_meter_reports_no_gap_for_a_model_blind_to_actions():
    torch.manual_seed(0)
    tokenizer = SliceTokenizer(channels=(4, 8), fsq_levels=(5, 5, 5))
    dynamics = {"grid_size": (4, 4), "max_steps": 4, "patch": 2, "width": 16, "depth": 1, "heads": 2}
    navigator = SliceNavigator(tokenizer, {**dynamics, "action_mode": "none"})
    slices, actions = torch.rand(3, 4, 1, 16, 16), torch.randn(3, 3, 7)
    poses = Pose.create([0.0, 0.0, 0.0], "axial", 1.0).as_tensor().expand(3, 4, 13)
    meter = ControllabilityMeter()
    assert all(math.isnan(v) for v in meter.compute().values())
    meter.update(navigator, slices, actions, poses)
    figures = meter.compute()
    assert tuple(figures) == METRIC_NAMES
    assert figures["ctrl_mse_true"] == figures["ctrl_mse_shuffled"] == figures["ctrl_mse_zero"]
    assert figures["ctrl_psnr_gap_db"] == 0.0 and figures["ctrl_ratio_true_shuffled"] == 1.0
    with torch.no_grad():
        tokens = navigator.tokens(slices)
    copy = float(((tokens[:, 1:] - tokens[:, :-1]) ** 2).mean())
    assert math.isclose(figures["ctrl_mse_copy"], copy, rel_tol=1e-5)
    assert math.isclose(figures["ctrl_ratio_true_copy"], figures["ctrl_mse_true"] / copy, rel_tol=1e-5)
    assert math.isclose(figures["ctrl_ratio_true_warp"], figures["ctrl_mse_true"] / figures["ctrl_mse_warp"])
    aligned = SliceNavigator(tokenizer, dynamics)
    meter.reset()
    meter.update(aligned, slices, actions, poses)
    assert meter.compute()["ctrl_mse_true"] != meter.compute()["ctrl_mse_shuffled"]  # an aligned model reads them


@pytest.mark.parametrize("base, most_true_over_shuffled", [("warp", 0.8), ("current", 0.98)])
def test_the_bundle_regime_and_dynamics_make_a_model_use_its_actions(base, most_true_over_shuffled):
    """With the dynamics bundle's own navigation regime, conditioning and learning rate (read from its train.yaml),
    a short CPU run on rendered trajectories gives a model whose next-step error on held-out trajectories is lower
    with the true actions than with shuffled ones, and lower than copying (a model blind to its actions scores
    true/shuffled 1 exactly: see the test above). With the bundle's warp base (the default) and, so that the
    learned conditioning is checked apart from the geometry, with the current latents as the base."""
    regime, dynamics, learning_rate = bundle_regime()
    train, held_out = rendered_trajectories(regime, 4, 0, 64), rendered_trajectories(regime, 1, 1, 32)
    torch.manual_seed(0)
    fields = {**dynamics, "residual_base": base, "width": 32, "depth": 1, "heads": 2}
    navigator = SliceNavigator(SliceTokenizer(channels=(8, 16)), fields)
    train_dynamics(navigator, train, 300, learning_rate)
    meter = ControllabilityMeter()
    meter.update(navigator, held_out["image"], held_out["actions"], held_out["poses"])
    figures = meter.compute()
    assert figures["ctrl_ratio_true_shuffled"] < most_true_over_shuffled and figures["ctrl_ratio_true_copy"] < 0.9
    if base == "warp":  # the tokenizer is untrained: its decoder tells true from shuffled only where the base moves
        assert figures["ctrl_psnr_gap_db"] > 0
