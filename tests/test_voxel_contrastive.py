"""The multi-positive voxel contrastive objective: its value on cases worked by hand, invariance to renaming the
labels, and a short CPU run after which two appearances of an unseen label map give features closer for shared
labels than for different ones."""

import math
import shutil

import pytest
import torch
from monai.networks.nets import UNet

from monai_slicenav.export import load_encoder
from monai_slicenav.networks import VoxelContrastiveLoss, sample_voxels_per_label, supervised_contrastive
from monai_slicenav.transforms import RandSynthAppearance, SynthLabelEnsemble

TINY_VOXEL = {  # the voxel_contrastive bundle at the smallest settings: seconds per run
    "num_synthetic": 2, "num_val_synthetic": 1, "synth_size": 40, "crop_size": 32, "crops_per_volume": 1,
    "channels": [8, 16, 32], "batch_size": 1, "num_workers": 0, "max_epochs": 6, "val_interval": 6, "per_label": 16,
    "learning_rate": 0.003,
}  # fmt: skip


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


def test_the_bundle_trains_exports_the_common_format_and_infers(tmp_path):
    """The voxel_contrastive bundle's loss falls on a few label maps, its export loads as every other variant's
    (and reproduces the trained network's features), and inference writes features of a volume."""
    from monai_slicenav.cli import main
    from monai_slicenav.encoders import trained_network

    from .helpers import bundle_workflow, configs_dir, record_losses, run_workflow, zoo_network_checks

    flow = bundle_workflow("voxel_contrastive", tmp_path, **TINY_VOXEL)
    losses = record_losses(flow)
    assert sum(losses[-2:]) < sum(losses[:2]) - 0.2
    encoder = load_encoder(tmp_path / "models" / "encoder")
    trained = flow.parser.get_parsed_content("network").eval()
    x = torch.rand(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(encoder.pyramid(x), trained(x), strict=True))
    # `slicenav export` rebuilds the training network from the record: a VoxelContrastiveNet, not a VolumeMAE
    assert type(trained_network(tmp_path, load_weights=True)).__name__ == "VoxelContrastiveNet"
    shutil.copytree(configs_dir("voxel_contrastive"), tmp_path / "configs")  # a bundle folder, as users have it
    main(["export", str(tmp_path), str(tmp_path / "exported")])
    exported = load_encoder(tmp_path / "exported")
    with torch.no_grad():
        torch.testing.assert_close(exported(x), encoder(x), rtol=0, atol=0)
    infer = bundle_workflow("voxel_contrastive", tmp_path, "inference.yaml", size=40,
                            **{"preprocessing#transforms#0#synth_options": {"spatial_size": 40}})  # fmt: skip
    run_workflow(infer)
    out = next((tmp_path / "eval" / "inference").iterdir())
    features = torch.load(out / "features.pt", weights_only=True)
    assert features["features"].shape == (8, 20, 20, 20) and features["stride"] == 2
    assert (out / "features.png").is_file()
    finest = {"_meta_#network_data_format#outputs#pred#num_channels": TINY_VOXEL["channels"][0]}  # tiny widths
    zoo_network_checks("voxel_contrastive", tmp_path, "models/encoder/encoder.pt", **finest)


def test_pretrain_refuses_unlabelled_scans_for_the_contrastive_variant(tmp_path, capsys):
    from monai_slicenav.cli import main

    with pytest.raises(SystemExit):
        main(["pretrain", "voxel_contrastive", "2", str(tmp_path / "out"), "--data", str(tmp_path)])
    assert "learns from label maps" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_registration_with_a_trained_voxel_encoder_recovers_a_known_shift(tmp_path):
    """Feature registration with a briefly trained voxel-contrastive encoder on a pair whose moving image is the
    fixed one shifted by 4 mm: the feature dissimilarity falls and label Dice rises over no registration."""
    from monai_slicenav.downstream import Lift3D
    from monai_slicenav.downstream.registration import (
        RegistrationConfig,
        feature_levels,
        label_dice,
        register,
        warp_volume,
    )
    from monai_slicenav.downstream.registration_run import file_pair, load_pair

    from .helpers import bundle_workflow, record_losses
    from .test_registration import _blob_pair

    record_losses(bundle_workflow("voxel_contrastive", tmp_path / "bundle", **TINY_VOXEL))
    files = _blob_pair(tmp_path)
    data = load_pair(
        file_pair(files["fixed_image"], files["moving_image"], files["fixed_label"], files["moving_label"])
    )
    lifted = Lift3D(load_encoder(tmp_path / "bundle" / "models" / "encoder")).eval()
    fixed, moving = (feature_levels(lifted, data[f"{r}_image"], 3) for r in ("fixed", "moving"))
    ddf = register(
        fixed, moving, data["fixed_image"].shape[2:], "features", RegistrationConfig(iterations=(30, 30, 20))
    )
    warped = feature_levels(lifted, warp_volume(data["moving_image"], ddf), 3)

    def dissimilarity(a, b) -> float:
        return float((1 - (a * b).sum(dim=1)).mean())

    assert dissimilarity(warped[-1], fixed[-1]) < dissimilarity(moving[-1], fixed[-1])
    classes = int(max(data["fixed_label"].max(), data["moving_label"].max())) + 1
    before = sum(label_dice(data["moving_label"], data["fixed_label"], classes)) / 2
    after = sum(label_dice(warp_volume(data["moving_label"].float(), ddf, "nearest"), data["fixed_label"], classes)) / 2
    assert after > before + 0.05, (before, after)


def test_combined_similarity_registers_with_features_and_intensities(tmp_path):
    from monai_slicenav.downstream.registration import RegistrationConfig
    from monai_slicenav.downstream.registration_run import file_pair, run_registration
    from monai_slicenav.encoders import VolumeEncoder
    from monai_slicenav.export import export_encoder

    from .test_registration import _blob_pair

    files = _blob_pair(tmp_path)
    export_encoder(VolumeEncoder({"channels": (8, 16, 32)}), tmp_path / "encoder")
    pair = file_pair(files["fixed_image"], files["moving_image"], files["fixed_label"], files["moving_label"])
    config = RegistrationConfig(iterations=(30, 30, 20), intensity_weight=1.0)
    record = run_registration(pair, tmp_path / "out", "combined", tmp_path / "encoder", 2.0, config)
    assert record["similarity"] == "combined" and record["mean_dice_after"] > record["mean_dice_before"] + 0.1
    with pytest.raises(ValueError, match="'combined' needs an exported encoder"):
        run_registration(pair, tmp_path / "out", "combined", "", 2.0, config)
