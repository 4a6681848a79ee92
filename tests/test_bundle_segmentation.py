"""The segmentation bundle: few-shot training from an exported encoder, evaluation writing Dice files, inference
back onto the input grid; the coarse label merge and the deformed copies checked by value."""

import csv
import json

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow, verify_metadata
from monai.transforms import Compose, Spacingd

from monai_slicenav.data.labelled import coarse_label_names, labelled_case, load_coarse_labels
from monai_slicenav.encoders import ContextEncoder, SliceEncoder
from monai_slicenav.export import export_encoder
from monai_slicenav.networks import TokenizerConfig
from monai_slicenav.transforms import CoarseLabelsd, DeformedCopyd, EmbeddedVolumed

from .helpers import SCHEMA, configs_dir, run_workflow, zoo_network_checks
from .packaged_data import needs_packaged_data

CONFIGS = configs_dir("slicenav_segmentation")
TINY = {"spacing_mm": 4.0, "roi_size": 32, "samples_per_volume": 2, "decoder_channels": [16, 8, 8]}


def test_merge_tables_cover_every_atlas_value():
    table = load_coarse_labels()
    assert coarse_label_names() == ["background", "frontal", "parietal", "temporal", "occipital", "limbic_insula"]
    assert sorted(map(int, table["pairs"]["mni152_harvard_oxford"]["merge"])) == list(range(1, 49))
    aal = table["pairs"]["colin27_brain_aal"]
    assert aal["names"]["1"] == "Precentral_L" and aal["merge"]["1"] == 1  # frontal
    assert aal["merge"][next(k for k, n in aal["names"].items() if n == "Thalamus_L")] == 0  # not cortical


def test_hcpex_merge_covers_every_area_and_keeps_cortex():
    hcpex = load_coarse_labels()["pairs"]["icbm2009c_hcpex"]
    assert sorted(map(int, hcpex["merge"])) == list(range(1, 427))
    cortical = [hcpex["merge"][str(k)] for k in range(1, 361)]  # the 360 HCP-MMP1 areas, left then right
    assert 0 not in cortical and cortical[:180] == cortical[180:]  # every area a lobe, the same in both hemispheres
    named = {n: hcpex["merge"][k] for k, n in hcpex["names"].items()}
    assert named["Primary_Visual_Cortex_L"] == 4 and named["Primary_Motor_Cortex_R"] == 1
    assert named["Primary_Auditory_Cortex_L"] == 3 and named["Area_PGi_R"] == 2 and named["Amygdala_L"] == 5
    assert named["Putamen_L"] == 0 and named["Thal_Pulvinar_medial_R"] == 0


@needs_packaged_data
def test_hcpex_lobes_lie_where_the_lobes_are():
    case = labelled_case("icbm2009c_hcpex")
    item = CoarseLabelsd()(EmbeddedVolumed()(case))
    label = item["label"][0]
    voxels = {c: torch.nonzero(label == c).double() for c in range(1, 6)}
    affine = item["label"].affine.double()
    centre = {c: (affine[:3, :3] @ v.mean(0) + affine[:3, 3]).tolist() for c, v in voxels.items()}  # RAS mm
    frontal, parietal, temporal, occipital, limbic = (centre[c] for c in range(1, 6))
    assert frontal[1] > limbic[1] > parietal[1] > occipital[1]  # anterior to posterior
    assert temporal[2] < min(frontal[2], parietal[2], occipital[2])  # the temporal lobe lowest
    assert parietal[2] > limbic[2]  # parietal above the insula and cingulate


@needs_packaged_data
def test_coarse_labels_and_deformed_copies():
    chain = Compose(
        [EmbeddedVolumed(), CoarseLabelsd(), Spacingd(("image", "label"), 4.0, mode=("bilinear", "nearest"))]
    )
    original = chain(labelled_case("colin27_brain_aal"))
    atlas = EmbeddedVolumed()(labelled_case("colin27_brain_aal"))["label"]
    precentral = atlas == 1
    assert torch.all(CoarseLabelsd()({"label": atlas, "pair": "colin27_brain_aal"})["label"][precentral] == 1)
    assert set(torch.unique(original["label"]).tolist()) == {0, 1, 2, 3, 4, 5}
    copy = DeformedCopyd()({**original, "copy_seed": 3})
    again = DeformedCopyd()({**original, "copy_seed": 3})
    assert torch.equal(copy["label"], again["label"]) and torch.equal(copy["image"], again["image"])
    changed = (copy["label"] != original["label"]).float().mean().item()
    assert 0.005 < changed < 0.3  # a smooth deformation, not identity, not noise
    with pytest.raises(ValueError, match="not in the merge table"):
        CoarseLabelsd()({"label": torch.full((1, 2, 2, 2), 200), "pair": "mni152_harvard_oxford"})


@needs_packaged_data
def test_train_then_evaluate_writes_dice(tmp_path):
    torch.manual_seed(0)
    encoder = SliceEncoder(TokenizerConfig(channels=(8, 16, 16)))
    export_encoder(encoder, tmp_path / "encoder")
    settings = {**TINY, "encoder_path": str(tmp_path / "encoder"), "frozen": True}
    train = ConfigWorkflow(
        config_file=str(CONFIGS / "train.yaml"),
        meta_file=str(CONFIGS / "metadata.json"),
        workflow_type="train",
        bundle_root=str(tmp_path),
        num_train=1,
        max_epochs=2,
        epoch_length=2,
        val_interval=2,
        **settings,
    )
    run_workflow(train, check_properties=True)
    state = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    key = "encoder.stages.0.0.conv.weight"
    assert torch.equal(state[f"encoder.encoder.{key}"], encoder.state_dict()[key])  # frozen pretrained weights

    evaluate = ConfigWorkflow(
        config_file=[str(CONFIGS / "train.yaml"), str(CONFIGS / "evaluate.yaml")],
        meta_file=str(CONFIGS / "metadata.json"),
        workflow_type="eval",
        bundle_root=str(tmp_path),
        **settings,
    )
    run_workflow(evaluate)
    with open(tmp_path / "eval" / "val_mean_dice_raw.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["filename"] for r in rows] == ["mni152_harvard_oxford"]
    dice = [float(rows[0][f"class{k}"]) for k in range(5)]
    assert all(0.0 <= d <= 1.0 for d in dice) and float(rows[0]["mean"]) == pytest.approx(np.mean(dice), abs=1e-6)
    assert (tmp_path / "eval" / "metrics.csv").read_text().startswith("val_mean_dice")

    image = tmp_path / "head.nii.gz"
    affine = np.array([[-2.0, 0, 0, 40], [0, 2.5, 0, -30], [0, 0, 2.0, -20], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((30, 27, 25)).astype(np.float32), affine), str(image))
    infer = ConfigWorkflow(
        config_file=str(CONFIGS / "inference.yaml"),
        workflow_type="infer",
        bundle_root=str(tmp_path),
        image=str(image),
        **{k: v for k, v in settings.items() if k != "frozen" and k != "samples_per_volume"},
    )
    run_workflow(infer)
    chain = [type(t).__name__ for t in infer.parser.get_parsed_content("preprocessing").transforms]
    assert chain[2:] == ["Orientationd", "ScaleIntensityRangePercentilesd", "Spacingd"]  # the encoder's contract
    seg = nib.load(str(tmp_path / "eval" / "inference" / "head" / "head_seg.nii.gz"))
    assert seg.shape == (30, 27, 25) and np.allclose(seg.affine, affine)
    assert set(np.unique(np.asarray(seg.dataobj)).tolist()) <= set(range(6))
    # traced: the lifted backbone's Python control flow (windows, checkpointing) does not script
    zoo_network_checks("slicenav_segmentation", tmp_path, trace=[1, 1, 32, 32, 32])

    # the stock inference config with no setting repeated: the network comes from models/training.json and the
    # bundle's own copy of the encoder export, and segments the same
    record = json.loads((tmp_path / "models" / "training.json").read_text())
    hyperparameters = record.pop("hyperparameters")
    assert record == {"num_classes": 6, "spacing_mm": 4.0, "roi_size": 32, "decoder_channels": [16, 8, 8],
                      "context": "none", "context_stride": 1, "encoder": "encoder"}  # fmt: skip
    assert hyperparameters["roi_size"] == 32 and hyperparameters["encoder_path"] == str(tmp_path / "encoder")
    assert (tmp_path / "models" / "encoder" / "encoder.pt").read_bytes() == (
        tmp_path / "encoder" / "encoder.pt"
    ).read_bytes()
    first = np.asarray(seg.dataobj).copy()
    stock = ConfigWorkflow(
        config_file=str(CONFIGS / "inference.yaml"), workflow_type="infer", bundle_root=str(tmp_path), image=str(image)
    )
    run_workflow(stock)
    again = nib.load(str(tmp_path / "eval" / "inference" / "head" / "head_seg.nii.gz"))
    assert np.array_equal(np.asarray(again.dataobj), first) and np.allclose(again.affine, affine)


def test_metadata_verifies_offline():
    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(SCHEMA))
    record = json.loads((CONFIGS / "metadata.json").read_text())
    assert record["network_data_format"]["outputs"]["pred"]["num_channels"] == len(coarse_label_names())


def test_the_context_option_reaches_the_backbone(tmp_path):
    from monai.bundle import ConfigParser

    torch.manual_seed(0)
    dynamics = {"latent_dim": 4, "grid_size": (4, 4), "max_steps": 8, "patch": 2, "width": 16, "depth": 1, "heads": 2}
    export_encoder(ContextEncoder(TokenizerConfig(channels=(8, 16, 16)), dynamics), tmp_path / "context_encoder")
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.yaml"))
    parser.update(
        {"bundle_root": str(tmp_path), "encoder_path": str(tmp_path / "context_encoder"), "context": "causal",
         "context_stride": 4}
    )  # fmt: skip
    network = parser.get_parsed_content("network_def")
    assert (network.encoder.context, network.encoder.context_stride) == ("causal", 4)
