"""Rendering on the training device: crop in the chain, pad in the collate, render in prepare_batch; the same slices
as rendering in the chain (checked on the CPU, an oblique-affine scan, several trajectories per volume)."""

import copy

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.transforms import Compose

from monai_slicenav.transforms import (
    CropToSlicesd,
    LoadVolumed,
    RandSliceTrajectoryd,
    collate_volume_crops,
    slice_renderer,
)
from monai_slicenav.workflows import PrepareSlices, RenderOnDevice

from .test_volume_store import OBLIQUE, padded_head


def chains(folder, size=16):
    front = [
        LoadVolumed(foreground_label=True),
        RandSliceTrajectoryd("label", num_steps=3, spatial_size=size, num_samples=2),
    ]
    on_cpu = Compose([*copy.deepcopy(front), slice_renderer(size, ("image", "label"), ("bilinear", "nearest"))])
    on_device = Compose([*front, slice_renderer(size, ("image", "label"), on_device=True)])
    return on_cpu, on_device


def test_the_device_path_renders_the_slices_of_the_chain(tmp_path):
    items = []
    for seed in range(3):
        path = tmp_path / f"s{seed}.nii.gz"
        nib.save(nib.Nifti1Image(padded_head(seed)[: 30 + 3 * seed], OBLIQUE), str(path))  # crops of other shapes
        items.append({"source": "file", "image": str(path)})
    on_cpu, on_device = chains(tmp_path)
    torch.manual_seed(7)  # MONAI's DataLoader seeds the chain's random state from torch's
    cpu_batch = next(iter(DataLoader(Dataset(items, on_cpu), batch_size=3)))
    torch.manual_seed(7)
    crops = next(iter(DataLoader(Dataset(items, on_device), batch_size=3, collate_fn=collate_volume_crops)))
    assert crops["image"].shape[0] == 6 and crops["image"].ndim == 5  # 3 volumes x 2 trajectories, padded crops
    keep = lambda batch, *args, **kwargs: batch  # noqa: E731 - the rendered batch itself
    rendered = RenderOnDevice(keep, 16, keys=("image", "label"), mode=("bilinear", "nearest"))(crops, "cpu")
    assert torch.allclose(rendered["image"], cpu_batch["image"], atol=1e-5)
    assert torch.equal(rendered["label"].float(), cpu_batch["label"].float())  # nearest: the same label values
    inputs, targets = RenderOnDevice(PrepareSlices(), 16)(crops, "cpu")
    assert torch.allclose(inputs, PrepareSlices()(cpu_batch, "cpu")[0], atol=1e-5) and inputs is targets
    assert cpu_batch["image"].abs().sum() > 1  # the slices cross the head


def test_a_crop_holds_fewer_voxels_and_the_device_option_needs_poses(tmp_path):
    path = tmp_path / "s.nii.gz"
    nib.save(nib.Nifti1Image(padded_head(), OBLIQUE), str(path))
    _, on_device = chains(tmp_path, size=8)
    on_device.set_random_state(0)
    item = on_device({"source": "file", "image": str(path)})[0]
    assert item["image"].numel() < np.prod(padded_head().shape)
    with pytest.raises(KeyError, match="render_on_device needs a slice input chain"):
        RenderOnDevice(PrepareSlices(), 8)({"image": torch.zeros(1, 1, 4, 4, 4)}, "cpu")
    with pytest.raises(KeyError, match="no poses"):
        CropToSlicesd("image", 8)({"image": item["image"]})


@pytest.mark.parametrize("contrastive_weight", [0.0, 0.1])
def test_a_bundle_trained_with_rendering_on_the_device_takes_the_same_steps(tmp_path, contrastive_weight):
    from ignite.engine import Events

    from .helpers import LOSS
    from .test_bundle_tokenizer import make_workflow

    losses = {}
    for on_device in (False, True):
        workflow = make_workflow(
            tmp_path / str(on_device), max_epochs=1, epoch_length=2, render_on_device=on_device,
            contrastive_weight=contrastive_weight, val_interval=1,
        )  # fmt: skip
        workflow.initialize()
        trainer = workflow.parser.get_parsed_content("train#trainer")
        seen = losses.setdefault(on_device, [])
        trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e, seen=seen: seen.append(LOSS(e.state.output)))
        workflow.run()
        evaluator = workflow.parser.get_parsed_content("validate#evaluator")
        seen.append(evaluator.state.metrics["val_psnr"])
        workflow.finalize()
    assert len(losses[True]) == 3
    np.testing.assert_allclose([float(v) for v in losses[True]], [float(v) for v in losses[False]], rtol=1e-3)


def test_the_dynamics_bundle_with_rendering_on_the_device_takes_the_same_steps(tokenizer_bundle, tmp_path):
    from .helpers import TINY_SLICES, bundle_workflow, record_losses

    runs = {}
    for on_device in (False, True):
        flow = bundle_workflow(
            "slicenav_dynamics", tmp_path / str(on_device), **TINY_SLICES, channels=[8, 16, 16], dynamics_width=32,
            dynamics_depth=1, tokenizer_dir=str(tokenizer_bundle), max_epochs=2, val_interval=2,
            render_on_device=on_device,
        )  # fmt: skip
        losses = record_losses(flow)
        metrics = flow.parser.get_parsed_content("validate#evaluator").state.metrics
        runs[on_device] = (losses, metrics["ctrl_mse_true"])
    np.testing.assert_allclose(runs[True][0], runs[False][0], rtol=1e-4)
    assert runs[True][1] == pytest.approx(runs[False][1], rel=1e-3)
