"""The dense lobe probe: one labelling on both heads, deterministic given the encoder, and context reaches it."""

import math

import torch

from monai_slicenav.encoders import ContextEncoder, SliceEncoder
from monai_slicenav.experiments.dense_probe import dense_probe, dense_probe_cases
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
