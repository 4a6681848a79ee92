"""Fixtures shared by the bundle tests: the smallest settings of the slice-pretraining bundles, a workflow builder
over their stacked configs, and one trained tokenizer bundle per session (stage 2 needs a stage 1)."""

from pathlib import Path

import pytest
from ignite.engine import Events
from monai.bundle import ConfigWorkflow

from monai_slicenav.experiments.pretrain import train_configs

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
TINY_SLICES = {
    "num_synthetic": 1,
    "num_val_synthetic": 1,
    "synth_size": 40,
    "slice_size": 32,
    "num_steps": 3,
    "batch_size": 1,
    "num_workers": 0,
}


def bundle_workflow(bundle: str, root: Path, config: str = "train.yaml", **overrides) -> ConfigWorkflow:
    """A workflow of ``bundle`` in ``root``: its stacked training configs, or ``config`` (inference ...)."""
    configs = BUNDLES / bundle / "configs"
    return ConfigWorkflow(
        config_file=train_configs(bundle) if config == "train.yaml" else str(configs / config),
        meta_file=str(configs / "metadata.json"),
        logging_file=str(configs / "logging.conf"),
        workflow_type="train" if config == "train.yaml" else "infer",
        bundle_root=str(root),
        **overrides,
    )


def record_losses(flow: ConfigWorkflow) -> list[float]:
    """initialize (checking the required properties), run and finalize ``flow``; the loss of every iteration."""
    flow.initialize()
    assert not flow.check_properties()
    losses: list[float] = []
    trainer = flow.parser.get_parsed_content("train#trainer")
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output["loss"].item()))
    flow.run()
    flow.finalize()
    return losses


@pytest.fixture(scope="session")
def tokenizer_bundle(tmp_path_factory) -> Path:
    """A tokenizer bundle root trained for 2 epochs at the smallest settings (channels 8, 16, 16)."""
    root = tmp_path_factory.mktemp("tokenizer")
    record_losses(
        bundle_workflow("slicenav_tokenizer", root, **TINY_SLICES, max_epochs=2, val_interval=5, channels=[8, 16, 16])
    )
    return root
