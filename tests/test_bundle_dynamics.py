"""The dynamics and static-volume bundles run through MONAI's ConfigWorkflow on tiny data, train, export and infer;
``slicenav pretrain`` runs every variant and reuses shared stages."""

import json
import shutil

import pytest
import torch
from monai.bundle import verify_metadata
from PIL import Image

from monai_slicenav.cli import main
from monai_slicenav.encoders import ContextEncoder, SliceEncoder, VolumeEncoder
from monai_slicenav.experiments.pretrain import pretrain, train_configs
from monai_slicenav.experiments.variants import VARIANT_TABLE, dynamics_variants
from monai_slicenav.export import export_encoder, load_encoder
from monai_slicenav.networks import SliceTokenizer
from monai_slicenav.transforms import RandSliceTrajectoryd
from monai_slicenav.workflows import load_tokenizer_weights, trained_navigator

from .helpers import BUNDLES, SCHEMA, TINY_SLICES, bundle_workflow, record_losses, run_workflow, zoo_network_checks

SMALL_NETS = {"channels": [8, 16, 16], "dynamics_width": 32, "dynamics_depth": 1}


def test_dynamics_bundle_overfits_exports_and_infers(tokenizer_bundle, tmp_path):
    flow = bundle_workflow(
        "slicenav_dynamics",
        tmp_path,
        **TINY_SLICES,
        **SMALL_NETS,
        tokenizer_dir=str(tokenizer_bundle),
        trajectories_per_volume=4,
        max_epochs=12,
        val_interval=6,
        learning_rate=0.003,
        gap_weight=0.5,
        residual_base="current",  # 12 steps improve on copying; on the warp base (the default) they may not yet
        max_translation=6.0,  # a regime of its own: inference must draw in it, not in the sampler's defaults
        max_rotation=0.2,
    )
    losses = record_losses(flow)
    # the residual model starts as the copy baseline (z_t+1 = z_t), so the loss falls from there
    assert len(losses) == 12 and sum(losses[-3:]) < sum(losses[:3])
    metrics = flow.parser.get_parsed_content("validate#evaluator").state.metrics
    assert metrics["ctrl_mse_true"] < metrics["ctrl_mse_copy"]  # and on held-out trajectories too
    assert metrics["val_latent_mse"] == pytest.approx(metrics["ctrl_mse_true"])  # one prediction, two meters

    # the frozen tokenizer inside the trained model equals the tokenizer bundle's weights
    trained = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    tokenizer_state = torch.load(tokenizer_bundle / "models" / "model.pt", weights_only=True)
    for key, value in tokenizer_state.items():
        assert torch.equal(trained[f"tokenizer.{key}"], value), key

    slice_encoder = load_encoder(tmp_path / "models" / "encoder").eval()
    context_encoder = load_encoder(tmp_path / "models" / "context_encoder").eval()
    assert isinstance(slice_encoder, SliceEncoder) and isinstance(context_encoder, ContextEncoder)
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(context_encoder(x)[:, :4], slice_encoder(x))
    record = json.loads((tmp_path / "models" / "context_encoder" / "encoder.json").read_text())
    assert record["provenance"]["bundle"] == "slicenav_dynamics" and record["provenance"]["iterations"] == 12
    # both exports record the navigation regime trained with: RandSliceTrajectoryd's arguments, re-usable as such
    regime = flow.parser.get_parsed_content("navigation_regime")
    for export in ("encoder", "context_encoder"):
        navigation = json.loads((tmp_path / "models" / export / "encoder.json").read_text())["navigation"]
        assert navigation == {**regime, "zoom_range": list(regime["zoom_range"])}
    assert navigation["num_steps"] == 3 and navigation["spatial_size"] == 32 and navigation["momentum"] == 0.0
    redrawn = RandSliceTrajectoryd("label", **navigation).sampler
    assert (redrawn.max_translation, redrawn.max_rotation) == (regime["max_translation"], regime["max_rotation"])
    assert list((tmp_path / "eval").glob("events.out.tfevents.*"))

    # `slicenav export` of this 32-pixel, 8-16-16 model rebuilds what was trained (not train.yaml's defaults)
    (tmp_path / "configs").mkdir()
    shutil.copy(BUNDLES / "slicenav_dynamics" / "configs" / "metadata.json", tmp_path / "configs")
    main(["export", str(tmp_path), str(tmp_path / "exported"), "--which", "context_encoder"])
    exported = json.loads((tmp_path / "exported" / "encoder.json").read_text())
    assert {k: exported[k] for k in ("architecture", "arguments", "input", "navigation")} == {
        k: record[k] for k in ("architecture", "arguments", "input", "navigation")
    }
    assert exported["input"]["slice_size"] == [32, 32] and exported["arguments"]["tokenizer"]["channels"] == [8, 16, 16]
    ours = torch.load(tmp_path / "exported" / "encoder.pt", weights_only=True)
    theirs = torch.load(tmp_path / "models" / "context_encoder" / "encoder.pt", weights_only=True)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)

    infer = bundle_workflow(
        "slicenav_dynamics",
        tmp_path,
        "inference.yaml",
        slice_size=32,
        num_steps=3,  # no network override: the architecture and the gap head come from the trained run's record
        **{"preprocessing#transforms#0#synth_options": {"spatial_size": 40, "cache_dir": str(tmp_path / "data")}},
    )
    run_workflow(infer)
    sampler = infer.parser.get_parsed_content("sampler").sampler  # the recorded regime, not the class defaults
    assert (sampler.max_translation, sampler.max_rotation, sampler.momentum) == (6.0, 0.2, navigation["momentum"])
    out = next((tmp_path / "eval" / "inference").iterdir())
    scores = json.loads((out / "rollout.json").read_text())
    assert scores["steps"] == 3 and scores["rollout_latent_mse"][0] == pytest.approx(scores["next_step_latent_mse"][0])
    assert Image.open(out / "rollout.png").size == (3 * 32, 4 * 32)
    # no zoo_network_checks: SliceNavigator.forward takes a slice stack (B, T, 1, h, w) and the actions between its
    # slices, where verify_net_in_out and ckpt_export build one image input


def test_tokenizer_weights_from_an_export_or_errors(tokenizer_bundle, tmp_path):
    tokenizer = SliceTokenizer(channels=(8, 16, 16), fsq_levels=(8, 5, 5, 5))
    loaded = load_tokenizer_weights(tokenizer, tokenizer_bundle / "models" / "encoder")
    reference = SliceEncoder.from_pretrained(tokenizer_bundle / "models" / "encoder").eval()
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encoder(x), reference(x))
    assert not any(p.requires_grad for p in loaded.parameters())
    with pytest.raises(FileNotFoundError, match="train the slicenav_tokenizer bundle first"):
        load_tokenizer_weights(tokenizer, tmp_path)
    with pytest.raises(ValueError, match="differs"):
        load_tokenizer_weights(SliceTokenizer(channels=(8, 16)), tokenizer_bundle / "models" / "encoder")
    volume_export = tmp_path / "volume_encoder"
    export_encoder(VolumeEncoder({"channels": (8, 16, 16)}), volume_export)  # another architecture's export
    with pytest.raises(ValueError, match="slicenav_volume_encoder.* is not a slice tokenizer"):
        load_tokenizer_weights(tokenizer, volume_export)


def test_static_volume_bundle_trains_exports_and_infers(tmp_path):
    flow = bundle_workflow(
        "static_volume_baseline",
        tmp_path,
        **{k: v for k, v in TINY_SLICES.items() if k not in ("slice_size", "num_steps")},
        crop_size=32,
        max_epochs=8,
        val_interval=8,
        learning_rate=0.003,
        channels=[8, 16, 16],
    )
    losses = record_losses(flow)
    assert sum(losses[-2:]) < 0.8 * sum(losses[:2])
    encoder = load_encoder(tmp_path / "models" / "encoder")
    assert isinstance(encoder, VolumeEncoder)
    infer = bundle_workflow(
        "static_volume_baseline",
        tmp_path,
        "inference.yaml",
        crop_size=32,
        channels=[8, 16, 16],
        **{"preprocessing#transforms#0#synth_options": {"spatial_size": 40, "cache_dir": str(tmp_path / "data")}},
    )
    run_workflow(infer)
    out = next((tmp_path / "eval" / "inference").iterdir())
    scores = json.loads((out / "reconstruction.json").read_text())
    assert scores["hidden_fraction"] == pytest.approx(0.6, abs=0.05) and 0 <= scores["hidden_mae"] < 1
    zoo_network_checks("static_volume_baseline", tmp_path, crop_size=32, channels=[8, 16, 16])


@pytest.mark.parametrize("bundle", ["slicenav_dynamics", "static_volume_baseline", "voxel_contrastive"])
def test_metadata_verifies_offline(bundle):
    verify_metadata(meta_file=str(BUNDLES / bundle / "configs" / "metadata.json"), filepath=str(SCHEMA))


def test_pretrain_every_variant_and_reuse_stages(tmp_path, capsys):
    cache = tmp_path / "cache"
    records = {v: pretrain(v, 4, tmp_path / v, preset="micro", cache_dir=cache) for v in VARIANT_TABLE}
    kinds = {v: type(load_encoder(tmp_path / v / "encoder")).__name__ for v in VARIANT_TABLE}
    assert kinds == {
        "tokenizer_only": "SliceEncoder",
        "dynamics_aligned": "ContextEncoder",
        "dynamics_none": "ContextEncoder",
        "dynamics_shuffled": "ContextEncoder",
        "static_volume": "VolumeEncoder",
        "voxel_contrastive": "VolumeEncoder",
    }
    assert isinstance(load_encoder(tmp_path / "dynamics_none" / "slice_encoder"), SliceEncoder)
    # the three dynamics variants share one stage-1 tokenizer (2 of the 4 steps), trained once
    stage1 = [records[v]["stages"][0] for v in dynamics_variants()]
    assert len({s["root"] for s in stage1}) == 1 and [s["reused"] for s in stage1] == [False, True, True]
    assert stage1[0]["overrides"]["epoch_length"] == 2
    assert records["static_volume"]["stages"][0]["overrides"]["epoch_length"] == 4
    modes = {records[v]["stages"][1]["overrides"]["action_mode"] for v in dynamics_variants()}
    assert modes == {"aligned", "none", "shuffled"}
    # what each variant's trained network did with its actions, read back from its weights (same seed and data):
    # a bundle that trained every variant as "aligned" would give three identical models
    trained = {v: trained_navigator(tmp_path / v) for v in dynamics_variants()}
    action_weights = {v: n.dynamics.action[0].weight for v, n in trained.items()}
    for a, b in (("dynamics_aligned", "dynamics_shuffled"), ("dynamics_aligned", "dynamics_none")):
        assert not torch.equal(action_weights[a], action_weights[b]), (a, b)
    tokens, actions = torch.randn(2, 4, 4, 4, 4), torch.randn(2, 3, 7)
    with torch.no_grad():
        blind = trained["dynamics_none"].dynamics
        torch.testing.assert_close(blind(tokens, actions), blind(tokens, torch.randn(2, 3, 7)))
    metrics = [value for r in records.values() for s in r["stages"] for value in s["val_metrics"].values()]
    assert metrics and torch.isfinite(torch.tensor(metrics)).all()

    out = str(tmp_path / "cli")
    main(["pretrain", "dynamics_aligned", "4", out, "--preset", "micro", "--cache_dir", str(cache)])
    printed = capsys.readouterr().out
    assert printed.count("reused") == 2  # both stages found in the cache
    with pytest.raises(SystemExit):
        main(["pretrain", "--variant", "dynamics_sideways", "--steps", "4", "--out", str(tmp_path / "bad")])
    assert "variant must be one of" in capsys.readouterr().err


def test_dynamics_bundle_resumes_from_its_checkpoint(tokenizer_bundle, tmp_path):
    settings = {**TINY_SLICES, **SMALL_NETS, "tokenizer_dir": str(tokenizer_bundle), "val_interval": 5}
    record_losses(bundle_workflow("slicenav_dynamics", tmp_path, **settings, max_epochs=2))
    resumed = bundle_workflow("slicenav_dynamics", tmp_path, **settings, max_epochs=3, resume=True)
    losses = record_losses(resumed)
    assert len(losses) == 1  # only the third epoch ran
    optimizer = resumed.parser.get_parsed_content("optimizer")
    assert all(int(state["step"]) == 3 for state in optimizer.state.values())  # Adam state restored


@pytest.mark.parametrize(
    "bundle", ["slicenav_tokenizer", "slicenav_dynamics", "static_volume_baseline", "voxel_contrastive"]
)
def test_rank_zero_writers_are_gated_by_name_and_nothing_else_is(bundle):
    """Every handler that logs or writes (rank 0's job) is disabled off rank 0 by ``is_main_rank``, by name, and
    none that computes what the run needs (reseeding, schedule, validation, metrics, the NaN stop) is; the multi-GPU
    file overrides no handler by list position, and on a rank > 0 the built lists keep exactly the computing ones."""
    from monai.bundle import ConfigParser

    configs = train_configs(bundle)
    multi_gpu = ConfigParser.load_config_file(str(BUNDLES / bundle / "configs" / "multi_gpu_train.yaml"))
    assert not [key for key in multi_gpu if "#handlers#" in key]
    # the multi-GPU file adds its process group in `setup`, so rank 0 of a resumed distributed run also prunes
    # stale checkpoints (the base's initialize is not restated, and loses nothing)
    parser = ConfigParser()
    parser.read_config([*configs, str(BUNDLES / bundle / "configs" / "multi_gpu_train.yaml")])
    assert "initialize" not in multi_gpu and parser["initialize"][0] == "@setup"
    assert any("PruneCheckpointsHandler" in item for item in parser["initialize"])
    parser = ConfigParser()
    parser.read_config(configs)
    writers = ("StatsHandler", "TensorBoardStatsHandler", "ExportEncoderHandler", "StripHandler", "RecordHandler")
    lists = ("train#handlers", "validate#handlers", "validate#image_handlers")
    for section in lists:
        for handler in (h if isinstance(h, dict) else parser[h[1:]] for h in parser[section]):
            if handler["_target_"].endswith("HandlerGroup"):  # the image handlers, checked on their own
                continue
            gated = handler.get("_disabled_") == "$not @is_main_rank"
            assert gated == handler["_target_"].endswith(writers), (section, handler["_target_"])
    parser["rank"] = 1
    parsed = parser.get_parsed_content("validate#handlers", instantiate=True)
    kept = [type(h).__name__ for h in parsed]
    assert all(not name.endswith(writers) for name in kept) and "ReseedHandler" in kept
    assert [h.handlers for h in parsed if type(h).__name__ == "HandlerGroup"] == [[]]  # no image writer either
