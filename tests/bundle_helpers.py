"""Shared by the bundle tests: where the bundles and the offline metadata schema live, and one workflow run."""

from pathlib import Path

from monai.bundle import ConfigWorkflow

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
