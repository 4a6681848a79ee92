"""Spatial probes: the oracle scores far above a random encoder, shuffled targets destroy the score."""

import math

import pytest
import torch

from monai_slicenav.data.phantom import shepp_logan_volume
from monai_slicenav.encoders import ContextEncoder, SliceEncoder
from monai_slicenav.experiments.probes import (
    ContextSet,
    ProbeSet,
    context_scores,
    encode,
    encode_in_context,
    encoder_features,
    gap_start,
    narrow_features,
    pose_features,
    pose_target,
    probe_scores,
    r2_score,
    ridge_fit,
    sample_context_set,
    sample_probe_set,
)
from monai_slicenav.geometry import relative
from monai_slicenav.networks import TokenizerConfig
from monai_slicenav.transforms import RandSliceTrajectory, RenderSlices
from monai_slicenav.volume import as_volume


@pytest.fixture(scope="module")
def sets() -> list[ProbeSet]:
    volume = shepp_logan_volume(48)
    return [sample_probe_set(volume, 48, slice_size=32, seed=seed) for seed in (0, 1)]


def test_ridge_recovers_a_linear_map():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=generator)
    y = x @ torch.randn(5, 3, generator=generator) + 2.0
    predict = ridge_fit(x[:150], y[:150], alpha=1e-3)
    assert r2_score(predict(x[150:]), y[150:]) > 0.999
    assert r2_score(y.mean(0).expand_as(y), y) == pytest.approx(0.0, abs=1e-6)


def test_targets_are_what_the_sampler_drew(sets):
    first = sets[0]
    assert first.slices.shape == (48, 2, 1, 32, 32) and first.pose.shape == (48, 9) and first.gap.shape == (48, 7)
    assert first.pose[:, :3].abs().max() <= 1.0 + 1e-5  # positions inside the volume, normalised
    normal_outer = first.pose[:, 3:]
    torch.testing.assert_close(normal_outer[:, 0] + normal_outer[:, 3] + normal_outer[:, 5], torch.ones(48))  # |n| = 1


def test_oracle_beats_random_encoder_and_shuffling_destroys_it(sets):
    train, test = sets[:1], sets[1:]
    oracle = probe_scores(pose_features(train), pose_features(test), train, test, alpha=1e-3)
    torch.manual_seed(0)
    encoder = SliceEncoder(TokenizerConfig(channels=(8, 16, 16))).eval()
    features = [encoder_features(lambda s: encode(encoder, s), group) for group in (train, test)]
    random_init = probe_scores(features[0], features[1], train, test)
    assert oracle["pose_r2"] > 0.99 and oracle["gap_r2"] > 0.99
    assert oracle["pose_r2"] > random_init["pose_r2"] + 0.5 and oracle["gap_r2"] > random_init["gap_r2"] + 0.5
    order = torch.randperm(len(test[0].pose), generator=torch.Generator().manual_seed(0))
    shuffled = [ProbeSet(test[0].slices, test[0].pose[order], test[0].gap[order])]
    destroyed = probe_scores(pose_features(train), pose_features(test), train, shuffled, alpha=1e-3)
    assert destroyed["pose_r2"] < 0.1 and destroyed["gap_r2"] < 0.1


def test_narrowed_features_keep_what_a_full_rank_projection_keeps(sets):
    train, test = sets[:1], sets[1:]
    torch.manual_seed(0)
    encoder = SliceEncoder(TokenizerConfig(channels=(8, 16, 16))).eval()
    wide = [encoder_features(lambda s: encode(encoder, s), group) for group in (train, test)]
    features = wide[0][0].shape[1]
    narrow_train, narrow_test = narrow_features(wide[0], wide[1], 3)
    assert narrow_train[0].shape == (48, 3) and narrow_train[1].shape == (48, 6) and narrow_test[1].shape == (48, 6)
    variances = narrow_train[0].var(0)
    assert bool((variances[:-1] >= variances[1:]).all())  # principal components, largest first
    # a full-rank projection is an invertible linear map: a (nearly unpenalised) linear probe scores the same
    full = narrow_features(wide[0], wide[1], features)
    as_is = probe_scores(wide[0], wide[1], train, test, alpha=1e-6)
    rotated = probe_scores(*full, train, test, alpha=1e-6)
    assert rotated["pose_r2"] == pytest.approx(as_is["pose_r2"], abs=1e-3)
    assert rotated["gap_r2"] == pytest.approx(as_is["gap_r2"], abs=1e-3)


def test_context_walks_end_where_their_targets_say_and_context_changes_the_features():
    volume = shepp_logan_volume(48)
    walks = sample_context_set(volume, 6, slice_size=32, steps=3, seed=0)
    sampler = RandSliceTrajectory(3, 32, start_orientation="random", threshold=0.05)
    sampler.set_random_state(0)
    frame = sampler.frame(volume)
    sampler.randomize()
    trajectory, actions = sampler.walk(frame)  # the first walk, drawn again in the pretraining regime
    torch.testing.assert_close(walks.walk[0], RenderSlices(32)(volume, trajectory))
    torch.testing.assert_close(walks.actions[0], actions.float())
    torch.testing.assert_close(walks.pose[0], pose_target(trajectory[-1], as_volume(volume)[1], volume.shape[1:]))
    gap = relative(trajectory[0], trajectory[-1])  # 3 steps: the pair starts at the first slice
    torch.testing.assert_close(walks.gap[0], torch.cat([gap[:3] / 32.0, gap[3:]]))
    assert gap_start(4) == 0 and gap_start(8) == 3  # CONTEXT_GAP_STEPS = 4 before the last, where the walk has them

    torch.manual_seed(0)
    dynamics = {"latent_dim": 4, "grid_size": (2, 2), "max_steps": 4, "patch": 2, "width": 16, "depth": 1, "heads": 2}
    encoder = ContextEncoder(TokenizerConfig(channels=(8, 16, 16)), dynamics).eval()
    in_context = encode_in_context(encoder, walks.walk, walks.actions)
    with torch.no_grad():
        expected = torch.nn.functional.adaptive_avg_pool2d(encoder(walks.walk, walks.actions)[:, -1], 2).flatten(1)
    torch.testing.assert_close(in_context, expected)
    pair = encode_in_context(encoder, walks.walk, walks.actions, positions=(-3, -1))
    with torch.no_grad():  # slice 1 in the context of the slice and action before it, and nothing after it
        earlier = encoder(walks.walk[:, :2], walks.actions[:, :1])[:, -1]
    earlier = torch.nn.functional.adaptive_avg_pool2d(earlier, 2).flatten(1)
    torch.testing.assert_close(pair, torch.cat([earlier, expected], dim=1))
    alone = encode(encoder, walks.walk[:, -1])
    assert not torch.allclose(in_context, alone)  # the slices and actions before it reach the last slice
    scores = context_scores(SliceEncoder(TokenizerConfig(channels=(8, 16, 16))), [walks], [walks])
    assert math.isnan(scores["pose_r2_ctx"]) and 0 < scores["pose_r2_last"] <= 1  # fitted and scored on one set
    assert math.isnan(scores["pose_r2_ctx_shuffled"]) and math.isnan(scores["gap_r2_ctx"])
    assert 0 < scores["gap_r2_last"] <= 1


class _ActionsOnly(torch.nn.Module):
    """A context 'encoder' whose in-context features are the walk's last action, spread over a 2 x 2 map."""

    max_context = 8

    def context_features(self, *args):  # marks a context encoder for the probes
        raise NotImplementedError

    def forward(self, walks, actions=None):
        if actions is None:
            return walks.mean(1, keepdim=True)
        if actions.shape[1] == 0:  # a walk of one slice: no action to show
            return torch.zeros(walks.shape[0], walks.shape[1], 7, 2, 2)
        last = actions[:, -1, :, None, None].expand(-1, -1, 2, 2)  # (N, 7, 2, 2)
        return last[:, None].expand(-1, walks.shape[1], -1, -1, -1)


def test_the_shuffled_actions_probe_gives_each_walk_another_walks_actions():
    volume = shepp_logan_volume(48)
    walks = sample_context_set(volume, 24, slice_size=16, steps=3, seed=1)
    scores = context_scores(_ActionsOnly(), [walks], [walks], grid=1)
    assert scores["pose_r2_ctx"] != scores["pose_r2_ctx_shuffled"]
    shifted = ContextSet(walks.walk, walks.actions.roll(-1, dims=0), walks.pose, walks.gap)
    again = context_scores(_ActionsOnly(), [shifted], [shifted], grid=1)
    assert again["pose_r2_ctx_shuffled"] == pytest.approx(scores["pose_r2_ctx"], abs=1e-6)  # the roll undone


def test_paired_differences_by_seed():
    from monai_slicenav.experiments.report import paired_lines

    rows = [{"variant": "dynamics_aligned", "seed": s, "pose_r2_ctx": 0.3 + 0.01 * s, "pose_r2_last": 0.2,
             "pose_r2_ctx_shuffled": 0.29, "pose_r2": 0.1, "gap_r2": 0.1} for s in range(3)]  # fmt: skip
    rows += [{"variant": "tokenizer_only", "seed": s, "pose_r2_ctx": math.nan, "pose_r2_last": 0.25 - 0.01 * s,
              "pose_r2": 0.12 + 0.05 * (s - 1), "gap_r2": 0.2} for s in range(3)]  # fmt: skip
    lines = "\n".join(paired_lines(rows))
    assert (
        "| dynamics_aligned: in context - alone | pose_r2_ctx - pose_r2_last | +0.110 ± 0.010 (3 seeds: higher) |"
        in lines
    )
    assert (
        "| dynamics_aligned: true - wrong actions | pose_r2_ctx - pose_r2_ctx_shuffled | +0.020 ± 0.010 "
        "(3 seeds: within 2 sd) |" in lines
    )
    assert "| dynamics_aligned - tokenizer_only | pose_r2_last | -0.040 ± 0.010 (3 seeds: lower) |" in lines
    assert "| dynamics_aligned - tokenizer_only | pose_r2 | -0.020 ± 0.050 (3 seeds: within 2 sd) |" in lines
    assert "tokenizer_only | pose_r2_ctx" not in lines  # no seed has it on both sides
    with_pixels = "\n".join(paired_lines(rows, pixels={"pose_r2_last": 0.25, "dense_dice": 0.5}))
    assert (
        "| dynamics_aligned - pixels (reference) | pose_r2_ctx - pixels' pose_r2_last | +0.060 ± 0.010 "
        "(3 seeds: higher) |" in with_pixels
    )
    assert "| pose_r2_last - pixels' pose_r2_last | -0.050 ± 0.000 (3 seeds: lower) |" in with_pixels
    assert "pixels' dense_dice" not in with_pixels  # no row has the dense probe
