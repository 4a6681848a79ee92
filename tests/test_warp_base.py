"""The warp residual base of stage 2: the current slice warped by the in-plane part of the action, checked by value
(an untrained model predicts exactly the warp reference; a shuffled model warps with the actions it is told; the
imagined rollout chains the zoom into the spacing)."""

import pytest
import torch

from monai_slicenav.geometry import Pose, inplane_warp
from monai_slicenav.networks import DynamicsConfig, LatentDynamics, SliceNavigator, SliceTokenizer, rollout
from monai_slicenav.networks.dynamics import derange
from monai_slicenav.networks.navigator import predict_next
from monai_slicenav.workflows import PrepareTrajectories
from monai_slicenav.workflows.controllability import ControllabilityMeter

DYNAMICS = {"grid_size": (4, 4), "max_steps": 5, "patch": 2, "width": 16, "depth": 1, "heads": 2, "residual": True}


def navigator(**fields) -> SliceNavigator:
    torch.manual_seed(0)
    tokenizer = SliceTokenizer(channels=(4, 8), fsq_levels=(5, 5, 5))
    return SliceNavigator(tokenizer, {**DYNAMICS, "residual_base": "warp", **fields}).eval()


def trajectories(batch: int = 3, steps: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    slices = torch.rand(batch, steps, 1, 16, 16, generator=generator)
    actions = torch.randn(batch, steps - 1, 7, generator=generator) * torch.tensor([3, 3, 3, 0.2, 0.2, 0.2, 0.1])
    spacing = 1 + torch.rand(batch, steps, generator=generator)
    return slices, actions, spacing


def test_untrained_warp_model_predicts_the_warped_current_slice():
    model = navigator()  # the zero-initialised head adds nothing to its base
    slices, actions, spacing = trajectories()
    output = model(slices, actions, spacing)
    expected = model.tokens(inplane_warp(slices[:, :-1], actions, spacing[:, :-1]))
    torch.testing.assert_close(output["prediction"], expected)
    assert float((expected - model.tokens(slices[:, :-1])).abs().max()) > 0  # the warp moved the slices


def test_meter_scores_an_untrained_warp_model_as_the_warp_reference():
    model = navigator()
    slices, actions, spacing = trajectories()
    poses = Pose(torch.zeros(3, 4, 3), torch.eye(3).expand(3, 4, 3, 3), spacing).as_tensor()
    meter = ControllabilityMeter()
    meter.update(model, slices, actions, poses)
    figures = meter.compute()
    assert figures["ctrl_mse_true"] == pytest.approx(figures["ctrl_mse_warp"], rel=1e-6)
    assert figures["ctrl_mse_zero"] == pytest.approx(figures["ctrl_mse_copy"], rel=1e-6)  # a zero action: no warp
    assert figures["ctrl_mse_shuffled"] != pytest.approx(figures["ctrl_mse_true"], rel=1e-3)


def test_zero_actions_and_the_none_model_keep_the_current_latents():
    model = navigator()
    slices, actions, spacing = trajectories()
    current = model.tokens(slices[:, :-1])
    torch.testing.assert_close(model(slices, torch.zeros_like(actions), spacing)["prediction"], current)
    blind = navigator(action_mode="none")
    torch.testing.assert_close(blind(slices, actions)["prediction"], current)  # no action: no spacing needed


def test_shuffled_model_warps_with_the_actions_it_is_told_while_training():
    model = navigator(action_mode="shuffled").train()
    slices, actions, spacing = trajectories(batch=4)
    torch.manual_seed(7)
    prediction = model(slices, actions, spacing)["prediction"]
    torch.manual_seed(7)
    told = derange(actions)
    torch.testing.assert_close(prediction, model.tokens(inplane_warp(slices[:, :-1], told, spacing[:, :-1])))


def test_rollout_warps_decoded_imagined_slices_with_the_zoomed_spacing():
    model = navigator()
    torch.nn.init.normal_(model.dynamics.head.weight, std=0.3)  # off the base, so every step differs
    slices, actions, spacing = trajectories(batch=2, steps=5)
    imagined = rollout(model, slices[:, :2], actions, spacing[:, :2])
    tokens = torch.cat([model.tokens(slices[:, :2]), imagined], dim=1)
    first = predict_next(model, tokens[:, :2], actions[:, :2], slices[:, 1], spacing[:, 1])
    torch.testing.assert_close(imagined[:, :1], first)
    zoomed = spacing[:, 1] * torch.exp(actions[:, 1, 6])  # spacing of the first imagined slice
    decoded = model.tokenizer.decode(imagined[:, 0]).clamp(0, 1)
    second = predict_next(model, tokens[:, :3], actions[:, :3], decoded, zoomed)
    torch.testing.assert_close(imagined[:, 1:2], second)


def test_prepare_trajectories_passes_the_poses_spacing():
    slices, actions, spacing = trajectories()
    poses = Pose(torch.zeros(3, 4, 3), torch.eye(3).expand(3, 4, 3, 3), spacing).as_tensor()
    inputs, targets, args, kwargs = PrepareTrajectories()({"image": slices, "actions": actions, "poses": poses})
    torch.testing.assert_close(kwargs["spacing"], spacing)
    output = navigator()(inputs, *args, **kwargs)  # as SupervisedTrainer calls the network
    assert output["prediction"].shape == (3, 3, 3, 4, 4)


def test_warp_base_needs_its_inputs():
    slices, actions, _ = trajectories()
    with pytest.raises(ValueError, match="pixel spacing"):
        navigator()(slices, actions)
    with pytest.raises(ValueError, match="SliceNavigator"):
        LatentDynamics(latent_dim=3, **DYNAMICS, residual_base="warp")(torch.rand(3, 4, 3, 4, 4), actions)
    with pytest.raises(ValueError, match="residual=True"):
        DynamicsConfig(residual_base="warp")
    with pytest.raises(ValueError, match="residual_base must be one of"):
        DynamicsConfig(residual=True, residual_base="flow")
