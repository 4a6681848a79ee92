"""The examples of the README and of the task pages in docs/ must run as written."""

import ast
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

README = Path(__file__).resolve().parents[1] / "README.md"
PAGES = [README, *sorted((README.parent / "docs").glob("*.md"))]  # the README and the task pages


def python_block(containing: str) -> str:
    """The python block of the README or a task page that contains ``containing``."""
    blocks = [b for page in PAGES for b in re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)]
    return next(b for b in blocks if containing in b)


def test_pipeline_example_runs(tmp_path):
    block = python_block("train_transforms = Compose(")
    namespace: dict = {}
    exec(compile(block, str(README), "exec"), namespace)
    image = np.zeros((30, 30, 20), np.float32)
    image[5:25, 8:22, 4:16] = np.random.default_rng(0).random((20, 14, 12)) + 1
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(image, affine), str(tmp_path / "image.nii.gz"))
    nib.save(nib.Nifti1Image((image > 1.5).astype(np.float32), affine), str(tmp_path / "label.nii.gz"))
    out = namespace["train_transforms"](
        {"image": str(tmp_path / "image.nii.gz"), "label": str(tmp_path / "label.nii.gz")}
    )
    assert out["image"].shape == (16, 1, 128, 128) and out["actions"].shape == (15, 7)
    assert set(torch.unique(out["label"]).tolist()) <= {0.0, 1.0}
    assert bool(torch.isfinite(out["image"]).all()) and float(out["image"].max()) > 0


def test_quick_start_has_two_commands():
    quick_start = README.read_text().split("## Quick start")[1].split("\n## ")[0]
    commands = [c.strip() for c in re.findall(r"```bash\n(.*?)\n\s*```", quick_start, flags=re.S)]
    assert len(commands) == 2
    ci = (README.parent / ".ci" / "run").read_text()
    assert commands[1] in ci.splitlines()  # CI runs the README's test command verbatim


def test_embedded_data_example_runs():
    namespace: dict = {}
    exec(compile(python_block("samples ="), str(README), "exec"), namespace)
    samples = namespace["samples"]
    assert len(samples) == 4 and all(s["image"].shape == (16, 1, 128, 128) for s in samples)


def test_downstream_example_runs(tmp_path, monkeypatch):
    from monai_slicenav.encoders import SliceEncoder
    from monai_slicenav.export import export_encoder
    from monai_slicenav.networks import TokenizerConfig

    monkeypatch.chdir(tmp_path)
    export_encoder(SliceEncoder(TokenizerConfig(channels=(8, 16, 16))), "runs/aligned/slice_encoder")
    namespace: dict = {}
    exec(compile(python_block("register_backbone("), str(README), "exec"), namespace)
    with torch.no_grad():
        assert namespace["net"](torch.rand(1, 1, 16, 16, 16)).shape == (1, 6, 16, 16, 16)
    assert namespace["name"] == "my-encoder"


def test_main_job_runs_both_stages_and_prints_controllability(tmp_path, monkeypatch, capsys):
    """Quick-start command 1, as written but at the micro preset and 4 steps: both stages train, both encoders
    are exported and the controllability figures are printed."""
    from monai_slicenav.cli import main

    quick_start = README.read_text().split("## Quick start")[1].split("\n## ")[0]
    command = re.findall(r"```bash\n(.*?)\n\s*```", quick_start, flags=re.S)[0].split("&&")[1].split()
    assert command[:3] == ["slicenav", "pretrain", "dynamics_aligned"] and "--preset" in command
    argv = [{"600": "4", "small": "micro"}.get(arg, arg) for arg in command[1:]]
    monkeypatch.chdir(tmp_path)
    main(argv)
    printed = capsys.readouterr().out
    assert "slicenav_tokenizer:" in printed and "slicenav_dynamics:" in printed
    assert "controllability on held-out validation trajectories" in printed and "dB" in printed
    for export in ("encoder", "slice_encoder"):
        assert (tmp_path / "runs" / "quickstart" / export / "encoder.pt").is_file()


def test_own_scans_commands_run(tmp_path, monkeypatch, capsys):
    """The three commands of "Pretrain on your own scans", as written but at tiny sizes, on a folder of scans."""
    import shlex

    from monai.bundle import ConfigWorkflow

    from monai_slicenav.cli import main

    section = (README.parent / "docs" / "own_scans.md").read_text()
    commands = [shlex.split(c) for c in re.findall(r"```bash\n(.*?)\n```", section, flags=re.S)[0].splitlines()]
    scans = tmp_path / "my_mri"
    scans.mkdir()
    for index, affine in enumerate((np.eye(4), np.diag([-1.2, -1.2, 1.5, 1.0]))):
        data = np.zeros((30, 28, 26), np.float32)
        data[6:24, 5:22, 5:20] = 1 + np.random.default_rng(index).random((18, 17, 15))
        nib.save(nib.Nifti1Image(data, affine), str(scans / f"scan{index}.nii.gz"))
    monkeypatch.chdir(tmp_path)
    tiny = {"num_steps": 3, "slice_size": 32, "batch_size": 1, "num_workers": 0, "max_epochs": 1, "epoch_length": 2,
            "val_interval": 1, "trajectories_per_volume": 2}  # fmt: skip
    assert commands[0][:2] == ["slicenav", "pretrain"]
    main([{"600": "2", "small": "micro"}.get(a, a) for a in commands[0][1:]])
    assert "controllability" in capsys.readouterr().out
    for command in commands[1:]:
        assert command[:4] == ["python", "-m", "monai.bundle", "run"]
        options = dict(zip(command[4::2], command[5::2], strict=True))
        overrides = {k.removeprefix("--"): v for k, v in options.items() if k not in ("--config_file", "--bundle_root")}
        nets = {"channels": [8, 16], "dynamics_width": 16, "dynamics_depth": 1}
        files = ast.literal_eval(options["--config_file"])  # the stacked list, as the README quotes it
        flow = ConfigWorkflow(
            config_file=[str(README.parent / f) for f in files], workflow_type="train",
            bundle_root=options["--bundle_root"], **overrides, **tiny, **nets,
        )  # fmt: skip
        flow.initialize()
        flow.run()
        flow.finalize()
        record = json.loads((tmp_path / options["--bundle_root"] / "models" / "encoder" / "encoder.json").read_text())
        data = record["provenance"]["data"]
        assert data["count"] + data["validation_count"] == 2 and data["source"] == "own scans"


def test_preprocessing_example_runs(tmp_path):
    from monai_slicenav.encoders import SliceEncoder, export_encoder, training_contract
    from monai_slicenav.networks.tokenizer import TokenizerConfig

    export = tmp_path / "encoder"
    export_encoder(SliceEncoder(TokenizerConfig(channels=(4, 8, 8))), export, {"contract": training_contract()})
    block = python_block('preprocessing("runs/aligned/encoder"').replace('"runs/aligned/encoder"', repr(str(export)))
    namespace: dict = {}
    exec(compile(block, str(README), "exec"), namespace)
    image = np.random.default_rng(1).random((12, 10, 8)).astype(np.float32) * 300
    nib.save(nib.Nifti1Image(image, np.diag([-1.0, 1.0, 1.0, 1.0])), str(tmp_path / "image.nii.gz"))
    nib.save(
        nib.Nifti1Image((image > 150).astype(np.float32), np.diag([-1.0, 1, 1, 1])), str(tmp_path / "label.nii.gz")
    )
    out = namespace["chain"]({"image": str(tmp_path / "image.nii.gz"), "label": str(tmp_path / "label.nii.gz")})
    assert float(out["image"].min()) == 0.0 and float(out["image"].max()) == 1.0
    assert out["image"].affine[0, 0] > 0 and out["label"].affine[0, 0] > 0  # RAS


def test_four_contrast_walkthrough_runs(tmp_path, monkeypatch):
    from monai_slicenav.encoders import SliceEncoder, export_encoder, training_contract
    from monai_slicenav.networks import TokenizerConfig

    monkeypatch.chdir(tmp_path)
    export_encoder(SliceEncoder(TokenizerConfig(channels=(8, 16, 16))), "runs/quickstart/slice_encoder",
                   {"contract": training_contract()})  # fmt: skip
    rng = np.random.default_rng(0)
    inside = np.zeros((40, 36, 34), bool)
    inside[8:30, 6:28, 5:27] = True
    case = {}
    for k, name in enumerate(["t1", "t1ce", "t2", "flair"]):
        data = (inside * (100 + 40 * k) + 10 * rng.random(inside.shape)).astype(np.float32)
        nib.save(nib.Nifti1Image(data, np.diag([-1.0, 1, 1, 1])), f"{name}.nii.gz")
        case[name] = f"{name}.nii.gz"
    nib.save(nib.Nifti1Image(inside.astype(np.float32), np.diag([-1.0, 1, 1, 1])), "seg.nii.gz")
    namespace: dict = {"my_case": {**case, "label": "seg.nii.gz"}}
    exec(compile(python_block("sliding_window_inference("), str(README), "exec"), namespace)
    assert namespace["image"].shape == (1, 4, 40, 36, 34) and float(namespace["image"].max()) == 1.0
    assert namespace["prediction"].shape == (1, 40, 36, 34)
    assert torch.isfinite(namespace["value"]) and namespace["net"].encoder.encoder.input_spec["contract"]
