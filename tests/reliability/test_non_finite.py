"""Non-finite values: a NaN in a volume, in weights or in a loss stops the entry point with a message naming the
file (or the iteration) and writes nothing, least of all a model or an export."""

import pytest
import torch

from monai_slicenav.cli import main
from monai_slicenav.encoders import SliceEncoder
from monai_slicenav.export import export_encoder, load_encoder, load_state_dict
from monai_slicenav.networks import SliceTokenizer, TokenizerConfig

from ..helpers import TINY_SLICES, bundle_workflow, run_workflow
from .harness import handled
from .inputs import head, save, segmentation_bundle, spoil_weights, trained_copy, with_nan

KLASS = "non-finite values"
# written when a run starts, before any step: TensorBoard files, the hyper-parameters, cached synthetic label maps
RUN_FILES = ("eval/*", "models/training.json", "data/*")


def test_render_refuses_a_nan_voxel(tmp_path, capsys):
    scan = save(tmp_path / "nan.nii.gz", with_nan(head()))
    run = lambda: main(["render", str(scan), "--out", str(tmp_path / "out")])  # noqa: E731
    handled(KLASS, "slicenav render", "NaN voxel", tmp_path, run, r"nan\.nii\.gz.*NaN", capsys)


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_render_refuses_a_non_finite_spacing(tmp_path, capsys, value):
    run = lambda: main(["render", "--spacing", value, "--out", str(tmp_path / "out")])  # noqa: E731
    handled(KLASS, "slicenav render", f"--spacing {value}", tmp_path, run, "--spacing must be a finite number", capsys)


def test_a_diverging_tokenizer_run_stops_before_saving_or_exporting(tmp_path):
    flow = bundle_workflow("slicenav_tokenizer", tmp_path, **TINY_SLICES, max_epochs=2, epoch_length=2,
                           learning_rate=1e30, channels=[8, 16, 16])  # fmt: skip
    run = lambda: run_workflow(flow)  # noqa: E731
    handled(KLASS, "slicenav_tokenizer train", "learning_rate 1e30", tmp_path, run, r"train_loss is nan at iteration",
            may_write=RUN_FILES)  # fmt: skip
    assert not (tmp_path / "models" / "model.pt").exists() and not (tmp_path / "models" / "encoder").exists()


def test_a_nan_tokenizer_never_trains_a_dynamics_stage(tokenizer_bundle, tmp_path):
    spoilt = trained_copy(tokenizer_bundle, tmp_path)
    spoil_weights(spoilt / "models" / "model.pt")
    flow = bundle_workflow("slicenav_dynamics", tmp_path / "stage2", **TINY_SLICES, channels=[8, 16, 16],
                           tokenizer_dir=str(spoilt), max_epochs=1)  # fmt: skip
    run = lambda: run_workflow(flow)  # noqa: E731
    handled(KLASS, "slicenav_dynamics train", "NaN in the tokenizer", tmp_path, run,
            r"model\.pt: non-finite values \(NaN/Inf\)", may_write=tuple(f"stage2/{p}" for p in RUN_FILES))  # fmt: skip


def test_an_export_holding_nan_is_refused_on_load(tokenizer_bundle, tmp_path):
    export = trained_copy(tokenizer_bundle, tmp_path) / "models" / "encoder"
    spoil_weights(export / "encoder.pt")
    handled(KLASS, "load_encoder", "NaN weight", tmp_path, lambda: load_encoder(export), r"encoder\.pt: non-finite")


def test_export_refuses_weights_holding_nan(tokenizer_bundle, tmp_path, capsys):
    bundle = trained_copy(tokenizer_bundle, tmp_path)
    spoil_weights(bundle / "models" / "model.pt")
    run = lambda: main(["export", str(bundle), "--out", str(tmp_path / "out")])  # noqa: E731
    handled(KLASS, "slicenav export", "NaN weight", tmp_path, run, r"model\.pt: non-finite", capsys)


def test_registration_refuses_a_nan_voxel(tmp_path):
    from ..helpers import configs_dir

    fixed, moving = save(tmp_path / "fixed.nii.gz", head()), save(tmp_path / "moving.nii.gz", with_nan(head(seed=1)))
    from monai.bundle import ConfigWorkflow

    flow = ConfigWorkflow(config_file=str(configs_dir("slicenav_registration") / "inference.yaml"),
                          workflow_type="infer", bundle_root=str(tmp_path), fixed_image=str(fixed),
                          moving_image=str(moving), similarity="intensity", iterations=[1, 1, 1])  # fmt: skip
    handled(KLASS, "slicenav_registration inference", "NaN voxel", tmp_path, lambda: run_workflow(flow),
            r"moving\.nii\.gz.*NaN")  # fmt: skip


def test_tokenizer_inference_refuses_a_nan_voxel(tokenizer_bundle, tmp_path):
    bundle = trained_copy(tokenizer_bundle, tmp_path)
    scan = save(tmp_path / "nan.nii.gz", with_nan(head()))
    flow = bundle_workflow("slicenav_tokenizer", bundle, config="inference.yaml", image=str(scan))
    handled(KLASS, "slicenav_tokenizer inference", "NaN voxel", tmp_path, lambda: run_workflow(flow),
            r"nan\.nii\.gz.*NaN")  # fmt: skip


def test_non_finite_weights_are_never_exported(tmp_path):
    exported = tmp_path / "enc"
    export_encoder(SliceEncoder(TokenizerConfig(channels=(8, 16))), exported)
    before = {p.name: p.read_bytes() for p in exported.iterdir()}
    encoder = SliceEncoder(TokenizerConfig(channels=(8, 16)))
    with torch.no_grad():
        next(encoder.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(ValueError, match="non-finite values .* training diverged"):
        export_encoder(encoder, exported)
    assert {p.name: p.read_bytes() for p in exported.iterdir()} == before  # the old export is intact


def test_weights_holding_nan_are_refused_on_load(tmp_path):
    """A checkpoint of a diverged run (one NaN) is refused by name wherever weights are loaded (exports, stage-2's
    frozen tokenizer, evaluation), instead of training or scoring on NaN."""
    state = SliceTokenizer(channels=(8, 16)).state_dict()
    state["encoder.stages.0.0.conv.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "model.pt")
    with pytest.raises(ValueError, match=r"model.pt: non-finite values \(NaN/Inf\) in 1 tensors"):
        load_state_dict(tmp_path / "model.pt")


def test_segmentation_inference_refuses_a_nan_voxel(tmp_path):
    """A trained segmentation bundle (its record and weights) given one NaN voxel: refused naming the file, where it
    used to write an all-background segmentation."""
    segmentation_bundle(tmp_path / "bundle")
    scan = save(tmp_path / "nan.nii.gz", with_nan(head()))
    flow = bundle_workflow("slicenav_segmentation", tmp_path / "bundle", config="inference.yaml", image=str(scan))
    handled(KLASS, "slicenav_segmentation inference", "NaN voxel", tmp_path, lambda: run_workflow(flow),
            r"nan\.nii\.gz.*NaN")  # fmt: skip


def test_static_baseline_inference_refuses_a_nan_voxel(tmp_path):
    from monai_slicenav.experiments.pretrain import pretrain

    record = pretrain("static_volume", 2, tmp_path / "run", preset="micro")
    stage = tmp_path / "run" / "stages" / record["stages"][0]["root"].rsplit("/", 1)[-1]
    scan = save(tmp_path / "nan.nii.gz", with_nan(head()))
    flow = bundle_workflow("static_volume_baseline", stage, config="inference.yaml", image=str(scan))
    handled(KLASS, "static_volume_baseline inference", "NaN voxel", tmp_path, lambda: run_workflow(flow),
            r"nan\.nii\.gz.*NaN")  # fmt: skip
