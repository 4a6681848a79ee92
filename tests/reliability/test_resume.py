"""Resuming is exact for every bundle that resumes: two epochs, a stop, then ``--resume true`` to three epochs give
the losses, learning rates, batches and final weights of an uninterrupted three-epoch run; and epoch 2 trains on
other data than epoch 1."""

from pathlib import Path

import pytest
import torch
from ignite.engine import Events

from ..helpers import TINY_SLICES, bundle_workflow
from ..packaged_data import needs_packaged_data
from .harness import record

SLICE_NETS = {"channels": [8, 16, 16], "val_interval": 100}
SETTINGS = {
    "slicenav_tokenizer": {**TINY_SLICES, **SLICE_NETS, "num_synthetic": 3},
    "slicenav_dynamics": {**TINY_SLICES, **SLICE_NETS, "num_synthetic": 3, "dynamics_width": 32, "dynamics_depth": 1},
    "static_volume_baseline": {
        **{k: v for k, v in TINY_SLICES.items() if k not in ("slice_size", "num_steps")},
        "num_synthetic": 3,
        "crop_size": 32,
        "crops_per_volume": 1,
        "channels": [8, 16, 32],
        "val_interval": 100,
    },
    "slicenav_segmentation": {
        "spacing_mm": 4.0,
        "roi_size": 32,
        "samples_per_volume": 1,
        "decoder_channels": [8, 8, 8],
        "num_train": 3,
        "epoch_length": 3,  # its default (10) is not a whole pass over 3 cases: see ReseedHandler
        "val_interval": 100,
    },
}
EPOCHS, ITERATIONS = 3, 3  # 3 training items, batch size 1: an epoch is one whole pass


def _run(bundle: str, root: Path, extra: dict, stop_after: int = 0, resume: bool = False) -> dict[str, list]:
    """Train ``bundle`` to EPOCHS x ITERATIONS (stopping after epoch ``stop_after``); per iteration: the loss, the
    learning rate and a fingerprint of the batch."""
    flow = bundle_workflow(bundle, root, **SETTINGS[bundle], **extra, max_epochs=EPOCHS, resume=resume)
    flow.initialize()
    trainer = flow.parser.get_parsed_content("train#trainer")
    optimizer = flow.parser.get_parsed_content("optimizer")
    seen: dict[str, list] = {"loss": [], "lr": [], "batch": []}

    def record(engine) -> None:
        output = engine.state.output if isinstance(engine.state.output, dict) else engine.state.output[0]  # decollated
        seen["loss"].append(float(output["loss"]))
        seen["lr"].append(optimizer.param_groups[0]["lr"])
        batch = engine.state.batch if isinstance(engine.state.batch, dict) else engine.state.batch[0]
        seen["batch"].append(float(torch.as_tensor(batch["image"]).double().sum()))

    trainer.add_event_handler(Events.ITERATION_COMPLETED, record)
    if stop_after:
        trainer.add_event_handler(Events.EPOCH_COMPLETED(once=stop_after), lambda engine: engine.terminate())
    flow.run()
    flow.finalize()
    return seen


def _final_weights(root: Path) -> dict[str, torch.Tensor]:
    return torch.load(root / "models" / "model.pt", weights_only=True)


@pytest.mark.parametrize(
    "bundle",
    [
        "slicenav_tokenizer",
        "slicenav_dynamics",
        "static_volume_baseline",
        pytest.param("slicenav_segmentation", marks=needs_packaged_data),
    ],
)
def test_resume_equals_an_uninterrupted_run(bundle, tokenizer_bundle, tmp_path):
    # the shuffled ablation also draws its derangements during training: they must resume too
    extra = {"tokenizer_dir": str(tokenizer_bundle), "action_mode": "shuffled"} if bundle == "slicenav_dynamics" else {}
    whole = _run(bundle, tmp_path / "whole", extra)
    first = _run(bundle, tmp_path / "parts", extra, stop_after=2)
    rest = _run(bundle, tmp_path / "parts", extra, resume=True)
    assert len(whole["loss"]) == EPOCHS * ITERATIONS and len(rest["loss"]) == ITERATIONS  # only epoch 3 ran again
    assert whole["batch"][ITERATIONS : 2 * ITERATIONS] != whole["batch"][:ITERATIONS]  # epoch 2 sees other data
    assert first["batch"] + rest["batch"] == pytest.approx(whole["batch"], rel=1e-9)
    assert first["lr"] + rest["lr"] == pytest.approx(whole["lr"], rel=1e-9)
    assert first["loss"] + rest["loss"] == pytest.approx(whole["loss"], rel=1e-4, abs=1e-6)
    assert [p.name for p in (tmp_path / "parts" / "models").glob("checkpoint_epoch=*.pt")] == [
        f"checkpoint_epoch={EPOCHS}.pt"
    ]  # the checkpoint the resumed run started from is gone, not left beside the newer one
    resumed, uninterrupted = _final_weights(tmp_path / "parts"), _final_weights(tmp_path / "whole")
    assert resumed.keys() == uninterrupted.keys()
    for key, value in uninterrupted.items():
        torch.testing.assert_close(resumed[key], value, rtol=1e-4, atol=1e-6, msg=key)
    record("resume", f"{bundle} train --resume true", "stopped after epoch 2, resumed to 3: every loss, lr, weight")


KILLER = """
import os, signal, sys
from ignite.engine import Events
sys.path.insert(0, {repo!r})
from tests.helpers import bundle_workflow
flow = bundle_workflow("slicenav_tokenizer", {root!r}, **{settings!r}, max_epochs={epochs}, resume={resume})
flow.initialize()
trainer = flow.parser.get_parsed_content("train#trainer")
kill = lambda engine: os.kill(os.getpid(), signal.SIGKILL)
if {kill_at}:
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once={kill_at}), kill)
flow.run()
flow.finalize()
"""


def test_a_run_killed_mid_epoch_resumes_to_the_same_weights(tmp_path):
    """SIGKILL in the middle of epoch 3 (the process dies at once: no handler runs, the epoch-2 checkpoint is the
    newest), then ``--resume true``: the final weights equal an uninterrupted run's to the last weight."""
    import subprocess
    import sys

    from ..helpers import REPO

    settings = SETTINGS["slicenav_tokenizer"]

    def run(root, epochs, resume=False, kill_at=0) -> int:
        script = KILLER.format(repo=str(REPO), root=str(root), settings=settings, epochs=epochs, resume=resume,
                               kill_at=kill_at)  # fmt: skip
        return subprocess.run([sys.executable, "-c", script], capture_output=True, cwd=REPO, timeout=300).returncode

    assert run(tmp_path / "whole", 4) == 0
    assert run(tmp_path / "killed", 4, kill_at=2 * ITERATIONS + 2) == -9  # SIGKILL during epoch 3
    assert [p.name for p in (tmp_path / "killed" / "models").glob("checkpoint_epoch=*.pt")] == ["checkpoint_epoch=2.pt"]
    assert not (tmp_path / "killed" / "models" / "model.pt").exists()
    assert run(tmp_path / "killed", 4, resume=True) == 0
    resumed, uninterrupted = _final_weights(tmp_path / "killed"), _final_weights(tmp_path / "whole")
    for key, value in uninterrupted.items():
        torch.testing.assert_close(resumed[key], value, rtol=1e-4, atol=1e-6, msg=key)
    record("resume", "slicenav_tokenizer train --resume true", "SIGKILL mid-epoch 3, resumed: every weight")
