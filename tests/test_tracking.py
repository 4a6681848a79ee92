"""Experiment tracking: every training bundle runs with MONAI's built-in ``--tracking mlflow`` settings (a local
SQLite store under the bundle's ``eval/``), and the losses, validation metrics and controllability figures are read
back from it. Needs the ``tracking`` extra (``pip install "monai_slicenav[tracking]"``)."""

from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow

from monai_slicenav.encoders import SliceEncoder, export_encoder
from monai_slicenav.networks import TokenizerConfig

from .helpers import BUNDLES, LOSS, TINY_SLICES, bundle_workflow, run_workflow
from .test_bundle_segmentation import TINY as TINY_SEGMENTATION
from .test_voxel_contrastive import TINY_VOXEL

pytest.importorskip("mlflow", reason="the tracking extra is not installed")
from mlflow.tracking import MlflowClient  # noqa: E402

TWO_EPOCHS = {"max_epochs": 2, "val_interval": 1, "epoch_length": 2}
TINY_STATIC = {k: v for k, v in TINY_VOXEL.items() if k not in ("per_label", "learning_rate")}  # no labels here


def logged_metrics(root: Path) -> dict[str, list[float]]:
    """Every metric of the one finished run in ``root/eval/mlruns.db``: its history of values."""
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'eval' / 'mlruns.db'}")
    runs = [run for e in client.search_experiments() for run in client.search_runs([e.experiment_id])]
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run = runs[0]
    assert client.list_artifacts(run.info.run_id)  # the executed config, overrides merged
    return {name: [m.value for m in client.get_metric_history(run.info.run_id, name)] for name in run.data.metrics}


def test_the_dynamics_bundle_logs_its_losses_validation_and_controllability(tokenizer_bundle, tmp_path):
    settings = {**TINY_SLICES, **TWO_EPOCHS, "channels": [8, 16, 16], "tokenizer_dir": str(tokenizer_bundle)}
    flow = bundle_workflow("slicenav_dynamics", tmp_path, tracking="mlflow", **settings)
    losses: list[float] = []
    flow.initialize()
    flow.parser.get_parsed_content("train#trainer").add_event_handler(
        "ITERATION_COMPLETED", lambda engine: losses.append(float(LOSS(engine.state.output)))
    )
    flow.run()
    flow.finalize()
    metrics = logged_metrics(tmp_path)
    assert metrics["train_loss"] == pytest.approx(losses)  # every iteration, the values the trainer saw
    assert len(metrics["val_latent_mse"]) == 2  # one per validation
    assert len(metrics["ctrl_ratio_true_shuffled"]) == 2 and metrics["ctrl_ratio_true_shuffled"][-1] > 0


@pytest.mark.parametrize(
    "bundle, settings",
    [
        ("slicenav_tokenizer", {**TINY_SLICES, "channels": [8, 16, 16]}),
        ("static_volume_baseline", TINY_STATIC),
        ("voxel_contrastive", TINY_VOXEL),
    ],
)
def test_every_pretraining_bundle_logs_its_loss_and_key_metric(tmp_path, bundle, settings):
    run_workflow(bundle_workflow(bundle, tmp_path, tracking="mlflow", **{**settings, **TWO_EPOCHS}))
    metrics = logged_metrics(tmp_path)
    assert len(metrics["train_loss"]) == 4 and all(value == value for value in metrics["train_loss"])
    validated = {name: values for name, values in metrics.items() if name.startswith("val_")}  # the key metric
    assert validated and all(len(values) == 2 for values in validated.values()), validated


def test_the_segmentation_bundle_logs_its_loss_and_dice(tmp_path):
    torch.manual_seed(0)
    export_encoder(SliceEncoder(TokenizerConfig(channels=(8, 16, 16))), tmp_path / "encoder")
    configs = BUNDLES / "slicenav_segmentation" / "configs"
    flow = ConfigWorkflow(
        config_file=str(configs / "train.yaml"),
        meta_file=str(configs / "metadata.json"),
        workflow_type="train",
        bundle_root=str(tmp_path),
        tracking="mlflow",
        num_train=1,
        **TINY_SEGMENTATION,
        **TWO_EPOCHS,
        encoder_path=str(tmp_path / "encoder"),
        frozen=True,
    )
    run_workflow(flow)
    metrics = logged_metrics(tmp_path)
    assert len(metrics["train_loss"]) == 4 and len(metrics["val_mean_dice"]) == 2
