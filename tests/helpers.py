"""Shared by the tests (plain helpers; fixtures live in conftest.py): where the bundles and the offline metadata
schema live, workflow runs, the smallest slice-pretraining settings, an oblique affine."""

from pathlib import Path

import torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow
from monai.handlers import from_engine
from scipy.spatial.transform import Rotation

from monai_slicenav.experiments.pretrain import train_configs

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "monai_slicenav" / "schemas" / "meta_schema.json"


def configs_dir(bundle: str) -> Path:
    """``bundles/<bundle>/configs`` of this repository."""
    return REPO / "bundles" / bundle / "configs"


def run_workflow(flow: ConfigWorkflow, check_properties: bool = False) -> ConfigWorkflow:
    """initialize, (assert that no required property is missing,) run and finalize a bundle workflow."""
    flow.initialize()
    if check_properties:
        assert not flow.check_properties()
    flow.run()
    flow.finalize()
    return flow


BUNDLES = REPO / "bundles"
LOSS = from_engine(["loss"], first=True)  # a trainer's loss from its (decollated) output
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
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(float(LOSS(e.state.output))))
    flow.run()
    flow.finalize()
    return losses


def oblique_affine() -> torch.Tensor:
    affine = torch.eye(4, dtype=torch.float64)
    rotation = torch.from_numpy(Rotation.from_euler("xyz", [20, -35, 50], degrees=True).as_matrix())
    affine[:3, :3] = rotation @ torch.diag(torch.tensor([1.2, -0.9, 2.5], dtype=torch.float64))
    affine[:3, 3] = torch.tensor([-30.0, 15.0, 4.0])
    return affine


def zoo_network_checks(
    bundle: str, root: Path, weights: str = "models/model.pt", trace: list[int] | None = None, **overrides
) -> None:
    """The model zoo's network checks on a trained ``bundle`` in ``root``: ``verify_net_in_out`` on its inference
    config's ``network_def`` (input and output as its metadata states) and ``ckpt_export`` of the weights the
    inference network loads (``weights``) to TorchScript (scripted, or with ``trace`` traced at that input shape),
    whose output equals the eager network's."""
    import torch
    from monai.bundle import ConfigParser, ckpt_export, verify_net_in_out

    configs = BUNDLES / bundle / "configs"
    files = {"meta_file": str(configs / "metadata.json"), "config_file": str(configs / "inference.yaml")}
    verify_net_in_out(net_id="network_def", bundle_root=str(root), n=2, **files, **overrides)
    exported = {"filepath": str(root / "models" / "model.ts"), "ckpt_file": str(root / weights)}
    traced = {"use_trace": trace is not None, "input_shape": trace}
    ckpt_export(net_id="network_def", bundle_root=str(root), **exported, **traced, **files, **overrides)
    scripted = torch.jit.load(str(root / "models" / "model.ts"))
    parser = ConfigParser()
    parser.read_config(files["config_file"])
    parser.read_meta(files["meta_file"])
    parser.update({"bundle_root": str(root), **overrides})
    network = parser.get_parsed_content("network_def").eval()
    network.load_state_dict(torch.load(root / weights, weights_only=True))
    shape = parser.get("_meta_#network_data_format#inputs#image#spatial_shape")
    channels = parser.get("_meta_#network_data_format#inputs#image#num_channels")
    x = torch.rand(*trace) if trace else torch.rand(1, channels, *[int(s) if str(s).isdigit() else 32 for s in shape])
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), network(x))
