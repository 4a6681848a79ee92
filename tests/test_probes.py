"""Spatial probes: the oracle scores far above a random encoder, shuffled targets destroy the score."""

import pytest
import torch

from monai_slicenav.data.phantom import shepp_logan_volume
from monai_slicenav.encoders import SliceEncoder
from monai_slicenav.experiments.probes import (
    ProbeSet,
    encode,
    encoder_features,
    narrow_features,
    pose_features,
    probe_scores,
    r2_score,
    ridge_fit,
    sample_probe_set,
)
from monai_slicenav.networks import TokenizerConfig


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
