"""The multi-positive voxel contrastive objective: its value on cases worked by hand, invariance to renaming the
labels, and a short CPU run after which two appearances of an unseen label map give features closer for shared
labels than for different ones."""

import math

import pytest
import torch
from monai.networks.nets import UNet

from monai_slicenav.networks import VoxelContrastiveLoss, sample_voxels_per_label, supervised_contrastive
from monai_slicenav.transforms import RandSynthAppearance, SynthLabelEnsemble


def test_two_samples_of_one_label_and_nothing_else_cost_nothing():
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert float(supervised_contrastive(features, torch.tensor([4, 4]))) == pytest.approx(0.0, abs=1e-6)


def test_the_value_of_a_small_case_worked_by_hand():
    """Anchors a0, a1 (label 1, orthogonal) and b (label 2, equal to a0): for a0 the positive a1 has similarity 0
    against the negative b's 1, so its term is -log(e^0 / (e^0 + e^(1/t))); the same for a1 against a0's..."""
    t = 0.5
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    labels = torch.tensor([1, 1, 2])
    a0 = -math.log(1 / (1 + math.exp(1 / t)))  # a0: positive a1 (cos 0), negative b (cos 1)
    a1 = -math.log(1 / (1 + 1))  # a1: positive a0 (cos 0), negative b (cos 0)
    assert float(supervised_contrastive(features, labels, t)) == pytest.approx((a0 + a1) / 2, rel=1e-6)


def test_renaming_the_labels_changes_nothing():
    torch.manual_seed(0)
    labels = torch.randint(0, 3, (1, 1, 10, 9, 8)) * 3 + 1  # labels 1, 4, 7
    renamed = torch.tensor([0, 9, 0, 0, 2, 0, 0, 5])[labels]  # 1 -> 9, 4 -> 2, 7 -> 5
    views = [torch.randn(1, 6, 10, 9, 8) for _ in range(3)]
    first = VoxelContrastiveLoss(per_label=16, seed=3)(views, labels)
    second = VoxelContrastiveLoss(per_label=16, seed=3)(views, renamed)
    assert float(first) == pytest.approx(float(second), rel=1e-6)
    index, sampled = sample_voxels_per_label(labels[0, 0], 16, torch.Generator().manual_seed(0))
    assert sorted(torch.bincount(sampled).nonzero().flatten().tolist()) == [1, 4, 7] and len(index) == 48


def test_features_that_follow_the_labels_score_better_than_noise():
    labels = torch.randint(0, 4, (2, 1, 8, 8, 8), generator=torch.Generator().manual_seed(1))
    one_hot = torch.nn.functional.one_hot(labels[:, 0], 4).permute(0, 4, 1, 2, 3).float()
    loss = VoxelContrastiveLoss(per_label=8, seed=0)
    noise = [torch.randn(2, 4, 8, 8, 8, generator=torch.Generator().manual_seed(s)) for s in (2, 3)]
    assert float(loss([one_hot, one_hot], labels)) < float(loss(noise, labels)) - 1.0
    with pytest.raises(ValueError, match="at least two appearances"):
        loss([one_hot], labels)
    with pytest.raises(ValueError, match="do not match"):
        loss([one_hot, one_hot], labels[:, :, :4])


def _appearances(label: torch.Tensor, seed: int, views: int = 2) -> tuple[list[torch.Tensor], torch.Tensor]:
    """``views`` random appearances (GMM intensities, corruptions) of one synthetic label map."""
    paint = RandSynthAppearance(corruption_prob=0.5).set_random_state(seed)
    return [paint(label).as_tensor()[None] for _ in range(views)], label.as_tensor()[None].long()


def _margin(network: torch.nn.Module, seed: int) -> float:
    """Mean cosine similarity of features across the two views for voxel pairs of the same label minus that for
    pairs of different labels, on a label map painted twice."""
    images, labels = _appearances(SynthLabelEnsemble(spatial_size=24, num_labels=(5, 7))(seed), seed)
    with torch.no_grad():
        a, b = (torch.nn.functional.normalize(network(x), dim=1) for x in images)
    index, sampled = sample_voxels_per_label(labels[0, 0], 64, torch.Generator().manual_seed(0))
    fa, fb = a[0].flatten(1)[:, index].T, b[0].flatten(1)[:, index].T
    similarity = fa @ fb.T
    same = sampled[:, None] == sampled[None, :]
    return float(similarity[same].mean() - similarity[~same].mean())


def test_a_short_run_makes_shared_labels_closer_across_appearances():
    torch.manual_seed(0)
    network = UNet(3, 1, 16, channels=(8, 16), strides=(2,), num_res_units=1)
    before = _margin(network.eval(), seed=999)
    loss = VoxelContrastiveLoss(temperature=0.2, per_label=24, seed=0)
    optimizer = torch.optim.AdamW(network.parameters(), lr=3e-3)
    network.train()
    maps = [SynthLabelEnsemble(spatial_size=24, num_labels=(5, 7))(seed) for seed in range(6)]
    for step in range(30):
        images, labels = _appearances(maps[step % len(maps)], step)
        value = loss([network(x) for x in images], labels)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    after = _margin(network.eval(), seed=999)  # a label map never seen in training
    print(f"margin before {before:.3f}, after {after:.3f}")
    assert after > 0.2 and after > before + 0.1, (before, after)
