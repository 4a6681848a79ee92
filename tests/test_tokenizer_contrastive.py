"""The appearance-contrastive term of the slice tokenizer: the voxel loss on 2D maps, the batch of two appearances,
the combined loss by value, a short run that brings shared labels closer across appearances, and the bundle's
wiring (two appearances of the same trajectories, refused on unlabelled scans)."""

import pytest
import torch

from monai_slicenav.networks import (
    PyramidContrastiveLoss,
    SliceTokenizer,
    TokenizerContrastiveLoss,
    TokenizerLoss,
    VoxelContrastiveLoss,
    sample_voxels_per_label,
)
from monai_slicenav.transforms import RandSynthAppearance, SynthLabelEnsemble
from monai_slicenav.workflows import PrepareSliceAppearances, appearance_contrast

from .helpers import TINY_SLICES, bundle_workflow, record_losses


def test_the_voxel_loss_on_slices_equals_the_loss_on_one_voxel_thick_volumes():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (2, 1, 12, 10), generator=generator)
    views = [torch.randn(2, 5, 12, 10, generator=generator) for _ in range(2)]
    flat = VoxelContrastiveLoss(per_label=8, seed=1)(views, labels)
    thick = VoxelContrastiveLoss(per_label=8, seed=1)([v[..., None] for v in views], labels[..., None])
    assert float(flat) == pytest.approx(float(thick), rel=1e-6)


def test_two_appearances_are_stacked_view_major_with_the_labels_as_a_channel():
    generator = torch.Generator().manual_seed(0)
    batch = {key: torch.rand(2, 3, 1, 8, 8, generator=generator) for key in ("image", "image_view2")}
    batch["label"] = torch.randint(0, 5, (2, 3, 1, 8, 8), generator=generator).float()
    inputs, targets = PrepareSliceAppearances()(batch)
    assert inputs.shape == (12, 1, 8, 8) and targets.shape == (12, 2, 8, 8)
    torch.testing.assert_close(inputs[:6], batch["image"].flatten(0, 1))
    torch.testing.assert_close(inputs[6:], batch["image_view2"].flatten(0, 1))
    torch.testing.assert_close(targets[:, :1], inputs)
    torch.testing.assert_close(targets[:6, 1:], targets[6:, 1:])  # one label slice for both appearances
    with pytest.raises(ValueError, match="one trajectory size"):
        PrepareSliceAppearances()({**batch, "label": batch["label"][:, :2]})


def test_the_combined_loss_is_reconstruction_plus_the_weighted_pyramid_term():
    torch.manual_seed(0)
    tokenizer = SliceTokenizer(channels=(4, 8), fsq_levels=(5, 5, 5))
    slices = torch.rand(6, 1, 16, 16)
    labels = torch.randint(0, 3, (3, 1, 16, 16)).float().repeat(2, 1, 1, 1)
    target = torch.cat([slices, labels], dim=1)
    with torch.no_grad():
        recon = tokenizer(slices)
        reconstruction = TokenizerLoss("l1", 0.2)(recon, slices)
        plain = TokenizerContrastiveLoss(tokenizer.encoder, weight=0.0)(recon, target)
        combined = TokenizerContrastiveLoss(tokenizer.encoder, weight=0.5, per_label=8, seed=2)(recon, target)
        pyramid = PyramidContrastiveLoss(per_label=8, seed=2)(tokenizer.encoder.pyramid(slices), labels[:3].long())
    assert float(plain) == pytest.approx(float(reconstruction), rel=1e-6)
    assert float(combined) == pytest.approx(float(reconstruction + 0.5 * pyramid), rel=1e-5)
    with pytest.raises(ValueError, match=">= 0"):
        TokenizerContrastiveLoss(tokenizer.encoder, weight=-1.0)


def _painted_slices(seed: int, views: int = 2) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Axial slices (16, 1, 24, 24) of ``views`` random appearances of one synthetic label map, and the labels."""
    label = SynthLabelEnsemble(spatial_size=24, num_labels=(5, 7))(seed)
    paint = RandSynthAppearance(corruption_prob=0.5).set_random_state(seed)
    images = [paint(label).as_tensor()[0, :, :, 4:20].permute(2, 0, 1)[:, None] for _ in range(views)]
    return images, label.as_tensor()[0, :, :, 4:20].permute(2, 0, 1)[:, None].long()


def _margin(tokenizer: SliceTokenizer, seed: int) -> float:
    """On slices of an unseen label map painted twice: mean cosine similarity of the encoder's finest features
    across the two appearances for pixel pairs of one label minus that for pairs of different labels."""
    images, labels = _painted_slices(seed)
    with torch.no_grad():
        a, b = (torch.nn.functional.normalize(tokenizer.encoder.pyramid(x)[0], dim=1) for x in images)
    coarse = torch.nn.functional.interpolate(labels.float(), size=a.shape[-2:], mode="nearest").long()
    index, sampled = sample_voxels_per_label(coarse[:, 0], 64, torch.Generator().manual_seed(0))
    fa, fb = (f.permute(1, 0, 2, 3).flatten(1)[:, index].T for f in (a, b))
    similarity = fa @ fb.T
    same = sampled[:, None] == sampled[None, :]
    return float(similarity[same].mean() - similarity[~same].mean())


def _trained(weight: float, steps: int = 30) -> SliceTokenizer:
    torch.manual_seed(0)
    tokenizer = SliceTokenizer(channels=(8, 16), fsq_levels=(5, 5, 5))
    loss = TokenizerContrastiveLoss(tokenizer.encoder, weight, temperature=0.2, per_label=16, seed=0)
    optimizer = torch.optim.AdamW(tokenizer.parameters(), lr=3e-3)
    maps = [_painted_slices(seed) for seed in range(4)]
    for step in range(steps):
        images, labels = maps[step % len(maps)]
        slices = torch.cat(images)
        value = loss(tokenizer(slices), torch.cat([slices, labels.float().repeat(2, 1, 1, 1)], dim=1))
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    return tokenizer.eval()


def _held_out_contrastive_loss(tokenizer: SliceTokenizer, seed: int) -> float:
    images, labels = _painted_slices(seed)
    loss = PyramidContrastiveLoss(temperature=0.2, per_label=16, seed=0, fixed_sampling=True)
    with torch.no_grad():
        return float(loss(tokenizer.encoder.pyramid(torch.cat(images)), labels))


def test_the_contrastive_term_brings_shared_labels_closer_across_appearances():
    """30 steps on slices of four label maps painted twice: on an unseen map, the encoder trained with the term
    (weight 1) has a larger cross-appearance margin and a lower contrastive loss than reconstruction alone."""
    with_term, without = _trained(1.0), _trained(0.0)
    margins = _margin(with_term, seed=999), _margin(without, seed=999)
    losses = _held_out_contrastive_loss(with_term, 999), _held_out_contrastive_loss(without, 999)
    print(f"cross-appearance margin {margins}, held-out contrastive loss {losses} (with the term, without)")
    assert margins[0] > margins[1] + 0.05 and losses[0] < losses[1] - 0.1, (margins, losses)


def test_the_bundle_renders_two_appearances_of_the_same_trajectories(tmp_path):
    flow = bundle_workflow("slicenav_tokenizer", tmp_path, **TINY_SLICES, contrastive_weight=0.5,
                           channels=[8, 16, 32], max_epochs=2, epoch_length=3, val_interval=2)  # fmt: skip
    parser = flow.parser
    parser.parse()
    network = parser.get_parsed_content("network")
    assert parser.get_parsed_content("loss").encoder is network.encoder  # the term trains the tokenizer's encoder
    item = parser.get_parsed_content("train#dataset")[0][0]
    assert item["image"].shape == item["image_view2"].shape == item["label"].shape == (4, 1, 32, 32)
    assert not torch.equal(torch.as_tensor(item["image"]), torch.as_tensor(item["image_view2"]))
    label = torch.as_tensor(item["label"])
    assert torch.equal(label, label.round()) and len(torch.unique(label)) > 2  # nearest: the map's own labels
    losses = record_losses(flow)
    assert all(torch.isfinite(torch.tensor(losses))) and len(losses) == 6
    record = (tmp_path / "models" / "training.json").read_text()
    assert '"contrastive_weight": 0.5' in record


def test_the_contrastive_term_is_refused_on_unlabelled_scans():
    assert appearance_contrast(0.0, "scans/") is False and appearance_contrast(0.3, "") is True
    with pytest.raises(ValueError, match="have none"):
        appearance_contrast(0.3, "scans/")
    with pytest.raises(ValueError, match="finite number"):
        appearance_contrast(float("nan"), "")
