"""The tokenizer bundle runs through MONAI's ConfigWorkflow on tiny data and trains."""

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow, ckpt_export, verify_metadata, verify_net_in_out
from PIL import Image

from monai_slicenav.encoders import training_contract
from monai_slicenav.experiments.pretrain import PRESETS, pretrain
from monai_slicenav.export import SliceEncoder, export_encoder, load_state_dict
from monai_slicenav.networks import SliceTokenizer
from monai_slicenav.transforms import EmbeddedVolumed, RenderSlices
from monai_slicenav.transforms.navigation import trajectory_from_dict

from .helpers import LOSS, SCHEMA, run_workflow

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "slicenav_tokenizer"
CONFIGS = {
    "meta_file": str(BUNDLE / "configs" / "metadata.json"),
    "config_file": [str(BUNDLE / "configs" / name) for name in ("pretraining.yaml", "train.yaml")],
}
TINY = {
    "num_synthetic": 1,
    "num_val_synthetic": 1,
    "synth_size": 40,
    "slice_size": 32,
    "num_steps": 3,
    "trajectories_per_volume": 4,
    "batch_size": 1,
    "num_workers": 0,
    "learning_rate": 0.003,
    "val_interval": 5,
}


def make_workflow(bundle_root: Path, **overrides) -> ConfigWorkflow:
    return ConfigWorkflow(
        config_file=CONFIGS["config_file"],
        meta_file=str(BUNDLE / "configs" / "metadata.json"),
        logging_file=str(BUNDLE / "configs" / "logging.conf"),
        workflow_type="train",
        bundle_root=str(bundle_root),
        **{**TINY, **overrides},
    )


def test_train_workflow_overfits_and_exports(tmp_path):
    workflow = make_workflow(tmp_path, max_epochs=15)
    workflow.initialize()
    assert not workflow.check_properties()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    losses: list[float] = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda engine: losses.append(float(LOSS(engine.state.output)))
    )
    workflow.run()
    workflow.finalize()
    assert len(losses) == 15
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3  # overfitting one volume drives the loss down

    models = tmp_path / "models"
    state = torch.load(models / "model.pt", weights_only=True)
    tokenizer = SliceTokenizer(channels=(32, 64, 128), fsq_levels=(8, 5, 5, 5))
    tokenizer.load_state_dict(state)
    encoder = SliceEncoder.from_pretrained(models / "encoder").eval()
    x = torch.rand(2, 1, 32, 32)
    assert torch.equal(encoder(x), tokenizer.eval().encoder(x))
    assert len(list(models.glob("checkpoint_epoch=*.pt"))) == 1
    record = json.loads((models / "encoder" / "encoder.json").read_text())
    assert record["input"]["contract"] == training_contract()  # what export.preprocessing turns into transforms
    provenance = record["provenance"]
    version = json.loads(Path(CONFIGS["meta_file"]).read_text())["version"]
    assert provenance["bundle"] == "slicenav_tokenizer" and provenance["version"] == version
    assert provenance["iterations"] == 15 and provenance["data"] == {
        "source": "embedded",
        "num_synthetic": 1,
        "seed": 0,
        "packaged": False,
    }
    assert list((tmp_path / "eval").glob("events.out.tfevents.*"))


def test_metadata_verifies_offline(tmp_path):
    verify_metadata(meta_file=CONFIGS["meta_file"], filepath=str(SCHEMA))  # raises on any schema error
    broken = tmp_path / "metadata.json"
    record = json.loads(Path(CONFIGS["meta_file"]).read_text())
    del record["network_data_format"]["inputs"]["image"]["value_range"]
    broken.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="value_range"):
        verify_metadata(meta_file=str(broken), filepath=str(SCHEMA))


def test_network_in_out_and_torchscript_export(tmp_path):
    verify_net_in_out(net_id="network_def", bundle_root=str(tmp_path), n=4, **CONFIGS)
    tokenizer = SliceTokenizer(channels=(32, 64, 128), fsq_levels=(8, 5, 5, 5)).eval()
    torch.save(tokenizer.state_dict(), tmp_path / "model.pt")
    ckpt_export(
        net_id="network_def",
        filepath=str(tmp_path / "model.ts"),
        ckpt_file=str(tmp_path / "model.pt"),
        bundle_root=str(tmp_path),
        use_trace=True,
        input_shape=[1, 1, 64, 64],
        **CONFIGS,
    )
    scripted = torch.jit.load(str(tmp_path / "model.ts"))
    x = torch.rand(2, 1, 64, 64)
    torch.testing.assert_close(scripted(x), tokenizer(x), atol=1e-5, rtol=1e-5)


def run_recording_losses(bundle_root: Path, stop_after: int = 0, **overrides) -> tuple[list[float], ConfigWorkflow]:
    workflow = make_workflow(bundle_root, val_interval=100, **overrides)
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    losses: list[float] = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda engine: losses.append(float(LOSS(engine.state.output)))
    )
    if stop_after:  # an interrupted run: stops once the checkpoint of epoch `stop_after` is written
        trainer.add_event_handler(Events.EPOCH_COMPLETED(once=stop_after), lambda engine: engine.terminate())
    workflow.run()
    workflow.finalize()
    return losses, workflow


def test_resume_continues_like_an_uninterrupted_run(tmp_path):
    uninterrupted, _ = run_recording_losses(tmp_path / "a", max_epochs=4)
    first_half, _ = run_recording_losses(tmp_path / "b", max_epochs=4, stop_after=2)
    second_half, resumed = run_recording_losses(tmp_path / "b", max_epochs=4, resume=True)
    assert first_half == pytest.approx(uninterrupted[:2], abs=1e-6)
    # epoch 3 needs the restored weights; epoch 4 also the restored Adam moments and learning-rate schedule
    assert second_half == pytest.approx(uninterrupted[2:], abs=1e-5)
    optimizer = resumed.parser.get_parsed_content("optimizer")
    assert all(int(state["step"]) == 4 for state in optimizer.state.values())


def test_inference_writes_tokens_that_match_the_model(tmp_path):
    volume = np.zeros((40, 44, 36), np.float32)
    volume[8:32, 10:34, 6:30] = np.random.default_rng(0).random((24, 24, 24)) + 1.0
    image_path = tmp_path / "head.nii.gz"
    nib.save(nib.Nifti1Image(volume, np.diag([1.5, 1.5, 1.5, 1.0])), str(image_path))
    (tmp_path / "models").mkdir()
    torch.manual_seed(0)
    tokenizer = SliceTokenizer(channels=(8, 16, 16), fsq_levels=(8, 5, 5, 5)).eval()
    torch.save(tokenizer.state_dict(), tmp_path / "models" / "model.pt")
    regime = {"num_steps": 7, "spatial_size": 32, "mode": "mixed", "max_translation": 4.0, "momentum": 0.5}
    export_encoder(SliceEncoder.from_tokenizer(tokenizer), tmp_path / "models" / "encoder", navigation=regime)
    workflow = ConfigWorkflow(
        config_file=str(BUNDLE / "configs" / "inference.yaml"),
        meta_file=CONFIGS["meta_file"],
        workflow_type="infer",
        bundle_root=str(tmp_path),
        image=str(image_path),
        slice_size=32,
        num_steps=5,
    )
    run_workflow(workflow, check_properties=True)

    out = tmp_path / "eval" / "inference" / "head"
    tokens = torch.load(out / "tokens.pt", weights_only=True)
    assert tokens["indices"].shape == (6, 4, 4) and tokens["codes"].shape == (6, 4, 4, 4)
    poses, _ = trajectory_from_dict(json.loads((out / "trajectory.json").read_text()))
    scaled = EmbeddedVolumed()({"source": "file", "image": str(image_path)})["image"]
    slices = RenderSlices(32)(scaled, poses)
    with torch.no_grad():
        assert torch.equal(tokenizer.encode(slices), tokens["codes"])
        recon = tokenizer.decode(tokens["codes"]).clamp(0, 1)[:, 0]
    strip = np.asarray(Image.open(out / "reconstruction.png")).astype(np.float32) / 255
    np.testing.assert_allclose(strip[32:, :32], recon[0].numpy(), atol=1 / 255 + 1e-6)


def test_two_process_torchrun_on_cpu(tmp_path):
    configs = [*CONFIGS["config_file"], str(BUNDLE / "configs" / "multi_gpu_train.yaml")]
    overrides = {**TINY, "num_synthetic": 2, "max_epochs": 2, "val_interval": 1}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "monai.bundle", "run", "--config_file", str(configs), "--meta_file", CONFIGS["meta_file"],
        "--bundle_root", str(tmp_path), *[item for k, v in overrides.items() for item in (f"--{k}", str(v))],
    ]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert log.count("train_loss") == 2  # two epochs, logged by rank 0 only
    writers = {path.name.split(".")[-2] for path in (tmp_path / "eval").glob("events.out.tfevents.*")}
    assert len(writers) == 1  # every TensorBoard file comes from one process
    assert len(list((tmp_path / "models").glob("checkpoint_epoch=*.pt"))) == 1
    assert SliceEncoder.from_pretrained(tmp_path / "models" / "encoder") is not None


def two_node_launch(tmp_path, port: int, overrides: dict) -> list[subprocess.CompletedProcess]:
    """The README's two-machine command, run as two ``torchrun --nnodes 2`` launches on this machine (gloo)."""
    configs = [*CONFIGS["config_file"], str(BUNDLE / "configs" / "multi_gpu_train.yaml")]
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
        "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "slicenav-test",
        "-m", "monai.bundle", "run", "--config_file", str(configs), "--meta_file", CONFIGS["meta_file"],
        "--bundle_root", str(tmp_path), *[item for k, v in overrides.items() for item in (f"--{k}", str(v))],
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)]
    nodes.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env))
    return [subprocess.CompletedProcess(n.args, n.wait(timeout=600), n.stdout.read()) for n in nodes]


def test_two_node_torchrun_trains_resumes_and_exports_once_storing_each_scan_once(tmp_path):
    import socket

    from monai_slicenav.data.store import read_entry

    from .test_volume_store import scan_folder

    folder = scan_folder(tmp_path, 4)
    overrides = {**TINY, "data": str(folder), "val_fraction": 0.25, "max_epochs": 1, "val_interval": 1}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stamps = {}
    for run, extra in enumerate(({}, {"resume": True, "max_epochs": 2})):
        nodes = two_node_launch(tmp_path, port + run, {**overrides, **extra})
        assert [n.returncode for n in nodes] == [0, 0], nodes[0].stdout[-3000:] + nodes[1].stdout[-3000:]
        entries = sorted((tmp_path / "data" / "volume_cache").glob("*.snv"))
        assert len(entries) == 4  # three training scans and one validation scan, each stored once
        stamps = stamps or {e.name: e.stat().st_mtime_ns for e in entries}
        assert {e.name: e.stat().st_mtime_ns for e in entries} == stamps  # the resumed run wrote none again
        assert all(read_entry(e)["image"].ndim == 4 for e in entries)
        logged = sorted(node.stdout.count("train_loss") for node in nodes)
        assert logged == [0, 2]  # one epoch per run, 3 training scans over 2 ranks: 2 iterations, logged by one rank
    assert [p.name for p in (tmp_path / "models").glob("checkpoint_epoch=*.pt")] == ["checkpoint_epoch=2.pt"]
    assert SliceEncoder.from_pretrained(tmp_path / "models" / "encoder") is not None
    assert json.loads((tmp_path / "models" / "training.json").read_text())["hyperparameters"]["max_epochs"] == 2


def test_a_small_preset_model_runs_through_the_stock_inference_config(tmp_path):
    """``slicenav pretrain tokenizer_only 4 out --preset small`` trains narrower networks than the bundle's defaults;
    the stock inference.yaml rebuilds that network from the run's own record, with no network override."""
    regime = {"max_translation": 5.0, "max_log_zoom": 0.05}  # a regime of its own: inference must draw in it
    record = pretrain(
        "tokenizer_only", 4, tmp_path / "out", preset="small", cache_dir=tmp_path / "cache", extra_overrides=regime
    )
    stage_root = Path(record["stages"][-1]["root"])
    workflow = ConfigWorkflow(
        config_file=str(BUNDLE / "configs" / "inference.yaml"),
        meta_file=CONFIGS["meta_file"],
        workflow_type="infer",
        bundle_root=str(stage_root),
        slice_size=64,
        num_steps=3,
    )
    run_workflow(workflow)
    network = workflow.parser.get_parsed_content("network")
    assert network.config.channels == tuple(PRESETS["small"]["channels"])
    sampler = workflow.parser.get_parsed_content("preprocessing").transforms[1].sampler
    assert (sampler.max_translation, sampler.max_log_zoom, sampler.spatial_size) == (5.0, 0.05, (64, 64))
    trained = load_state_dict(stage_root / "models" / "model.pt")
    assert all(torch.equal(trained[k], v) for k, v in network.state_dict().items())  # the trained weights, loaded
    (item,) = list((stage_root / "eval" / "inference").iterdir())
    tokens = torch.load(item / "tokens.pt", weights_only=True)
    assert tokens["codes"].shape == (4, 4, 8, 8)  # 64 / 2 ** 3 tokens a side, 4 latent channels
