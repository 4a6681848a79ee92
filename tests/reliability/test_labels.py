"""Label maps: float, fractional or NaN labels are refused naming the file (rounding would merge 0.3 into the
background and make NaN a huge negative class), through the functions and the registration bundle alike."""

import numpy as np
import pytest
import torch

from monai_slicenav.downstream.registration_run import file_pair, load_pair

from .harness import handled
from .test_degenerate_inputs import _head, _save

KLASS = "labels"


def test_non_integer_labels_are_refused_and_integer_ones_pass(tmp_path):
    image = _save(tmp_path / "image.nii.gz", _head())
    labels = np.zeros((30, 28, 26), np.float32)
    labels[6:24, 5:22, 5:20] = 2.0
    whole = _save(tmp_path / "labels.nii.gz", labels)
    labels[6:24, 5:22, 5:20] = 0.3  # would round into the background
    fractional = _save(tmp_path / "fractional.nii.gz", labels)
    with pytest.raises(ValueError, match="fractional.nii.gz: label values must be integers, found 0.3"):
        load_pair(file_pair(image, image, fractional, fractional))
    loaded = load_pair(file_pair(image, image, whole, whole))
    assert set(torch.unique(loaded["fixed_label"]).tolist()) == {0, 2}


@pytest.mark.parametrize(("case", "value", "says"), [("fractional", 0.3, "found 0.3"), ("nan", np.nan, "NaN|nan")])
def test_the_registration_bundle_refuses_labels_that_are_not_integers(tmp_path, case, value, says):
    from monai.bundle import ConfigWorkflow

    from ..helpers import configs_dir, run_workflow

    image = _save(tmp_path / "image.nii.gz", _head())
    labels = np.zeros((30, 28, 26), np.float32)
    labels[6:24, 5:22, 5:20] = 2.0
    good = _save(tmp_path / "labels.nii.gz", labels)
    labels[6:10, 5:22, 5:20] = value
    bad = _save(tmp_path / f"{case}.nii.gz", labels)
    flow = ConfigWorkflow(config_file=str(configs_dir("slicenav_registration") / "inference.yaml"),
                          workflow_type="infer", bundle_root=str(tmp_path), fixed_image=image, moving_image=image,
                          fixed_label=good, moving_label=bad, similarity="intensity", iterations=[1, 1, 1])  # fmt: skip
    handled(KLASS, "slicenav_registration inference", f"{case} label", tmp_path, lambda: run_workflow(flow),
            f"{case}.nii.gz.*({says})")  # fmt: skip
