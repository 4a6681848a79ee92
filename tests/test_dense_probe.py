"""The dense lobe probe: one labelling on both heads, fitted both ways, deterministic given the encoder, and context
(and its actions) reach it."""

import math

import pytest
import torch
from torch import nn

from monai_slicenav.encoders import ContextEncoder, SliceEncoder
from monai_slicenav.experiments.dense_probe import (
    DENSE_PENALTY,
    PENALTIES,
    PIXEL_KERNELS,
    dense_probe,
    dense_probe_cases,
    lobe_dice,
    pixel_features,
)
from monai_slicenav.networks import TokenizerConfig

from .packaged_data import needs_packaged_data


@needs_packaged_data
def test_the_probe_is_a_function_of_the_encoder_and_context_reaches_it():
    fitted, scored = dense_probe_cases(6.0)
    for case in (fitted, scored):  # the five lobes of one atlas, in each head's own grid
        assert set(torch.unique(case["label"]).tolist()) == {0, 1, 2, 3, 4, 5}
    assert fitted["image"].shape != scored["image"].shape  # two heads, each on its own grid
    torch.manual_seed(0)
    encoder = SliceEncoder(TokenizerConfig(channels=(8, 16, 16))).eval()
    first, again = dense_probe(encoder, (fitted, scored)), dense_probe(encoder, (fitted, scored))
    assert first == again and 0 < first["dense_dice"] < 1
    assert math.isclose(first["dense_dice"], sum(first[f"dense_dice_{k}"] for k in range(1, 6)) / 5)
    dynamics = {"latent_dim": 4, "grid_size": (2, 2), "max_steps": 8, "patch": 2, "width": 16, "depth": 1, "heads": 2}
    context_encoder = ContextEncoder(TokenizerConfig(channels=(8, 16, 16)), dynamics).eval()
    alone = dense_probe(context_encoder, (fitted, scored))["dense_dice"]
    assert dense_probe(context_encoder, (fitted, scored), context="bidirectional")["dense_dice"] != alone
    still = dense_probe(context_encoder, (fitted, scored), context="causal", actions="still")["dense_dice"]
    assert still != dense_probe(context_encoder, (fitted, scored), context="causal")["dense_dice"]  # it reads them


@needs_packaged_data
def test_the_probe_is_fitted_both_ways_and_its_penalty_is_fixed_or_chosen_on_the_fitted_head():
    cases = dense_probe_cases(6.0)
    torch.manual_seed(0)
    encoder = SliceEncoder(TokenizerConfig(channels=(8, 16, 16))).eval()
    scores, swapped = dense_probe(encoder, cases), dense_probe(encoder, cases[::-1])
    assert scores["dense_dice_ab"] == swapped["dense_dice_ba"] and scores["dense_dice_ba"] == swapped["dense_dice_ab"]
    assert math.isclose(scores["dense_dice"], (scores["dense_dice_ab"] + scores["dense_dice_ba"]) / 2)
    assert scores["dense_dice_ab"] != scores["dense_dice_ba"]  # two different fits
    assert scores["dense_penalty_ab"] == scores["dense_penalty_ba"] == DENSE_PENALTY
    chosen = dense_probe(encoder, cases, penalty=None)
    assert {chosen["dense_penalty_ab"], chosen["dense_penalty_ba"]} <= set(PENALTIES)
    with pytest.raises(ValueError, match="actions must be one of"):
        dense_probe(encoder, cases, actions="shuffled")


def test_lobe_dice_counts_each_lobe_and_averages_them():
    truth = torch.tensor([1, 1, 2, 2, 3, 4, 5, 5])
    predicted = torch.tensor([1, 2, 2, 2, 3, 4, 5, 1])
    scores = lobe_dice(predicted, truth)
    expected = {1: 2 * 1 / (2 + 2), 2: 2 * 2 / (2 + 3), 3: 1.0, 4: 1.0, 5: 2 * 1 / (2 + 1)}
    for lobe, value in expected.items():
        assert math.isclose(scores[f"dense_dice_{lobe}"], value, rel_tol=1e-6)
    assert math.isclose(scores["dense_dice"], sum(expected.values()) / 5, rel_tol=1e-6)


def test_the_context_steps_at_the_regime_the_encoder_recorded(tmp_path):
    import json

    from monai_slicenav.experiments.dense_probe import regime_stride
    from monai_slicenav.export import export_encoder

    export_encoder(SliceEncoder(TokenizerConfig(channels=(8, 16))), tmp_path / "plain")
    assert regime_stride(tmp_path / "plain", 3.0) == 1  # no regime recorded: neighbouring slices
    record_path = tmp_path / "plain" / "encoder.json"
    record = json.loads(record_path.read_text())
    for max_translation, spacing, stride in ((12.0, 3.0, 4), (12.0, 1.0, 12), (12.0, 6.0, 2), (2.0, 6.0, 1)):
        record["navigation"] = {"max_translation": max_translation}
        record_path.write_text(json.dumps(record))
        assert regime_stride(tmp_path / "plain", spacing) == stride


def test_the_untrained_control_keeps_the_trained_record(tmp_path):
    import json

    from monai_slicenav.encoders import load_encoder
    from monai_slicenav.experiments.dense_probe import regime_stride
    from monai_slicenav.experiments.evaluate import untrained_trunk
    from monai_slicenav.export import export_encoder

    torch.manual_seed(0)
    dynamics = {"latent_dim": 4, "grid_size": (2, 2), "max_steps": 8, "patch": 2, "width": 16, "depth": 1, "heads": 2}
    trained = ContextEncoder(TokenizerConfig(channels=(8, 16, 16)), dynamics)
    regime = {"num_steps": 7, "spatial_size": 64, "max_translation": 12.0}
    export_encoder(trained, tmp_path / "trained", {"slice_size": [64, 64]}, {"bundle": "x"}, regime)
    control = load_encoder(untrained_trunk(tmp_path / "trained", tmp_path / "control", seed=3))
    record = json.loads((tmp_path / "control" / "encoder.json").read_text())
    assert record["navigation"] == regime and record["input"] == {"slice_size": [64, 64]}
    assert regime_stride(tmp_path / "control", 3.0) == regime_stride(tmp_path / "trained", 3.0) == 4
    tokenizer, trunk = control.encoder.state_dict(), control.dynamics.state_dict()
    assert all(torch.equal(v, trained.encoder.state_dict()[k]) for k, v in tokenizer.items())  # stage 1 kept
    assert not all(torch.equal(v, trained.dynamics.state_dict()[k]) for k, v in trunk.items())  # trunk redrawn


def test_pixel_features_are_the_slices_intensities_at_several_widths():
    image = torch.rand(1, 20, 22, 5)
    features = pixel_features(image)
    assert features.shape == (9 * len(PIXEL_KERNELS), 20, 22, 5)
    assert torch.equal(features[4], image[0])  # width 1, the voxel itself
    assert torch.equal(features[1][1:], image[0][:-1]) and not features[1][0].any()  # the neighbour a row before
    planes = image[0].permute(2, 0, 1)[:, None]  # width 3 at the voxel: the in-plane 3 x 3 mean
    mean = nn.functional.avg_pool2d(planes, 3, 1, 1, count_include_pad=False)[:, 0].permute(1, 2, 0)
    assert torch.allclose(features[9 + 4], mean)
    across_first = pixel_features(image.permute(0, 3, 2, 1), axis=0)  # the same planes, cut across the first axis
    for width in range(len(PIXEL_KERNELS)):
        assert torch.allclose(across_first[9 * width + 4], features[9 * width + 4].permute(2, 1, 0))
    with pytest.raises(ValueError, match="odd widths"):
        pixel_features(image, kernels=(2,))
