import pytest
import torch
from ignite.engine import Engine
from monai.transforms import Compose
from torch import nn

from monai_slicenav.transforms import RandSynthAppearance
from monai_slicenav.transforms.synth import SynthLabelEnsemble
from monai_slicenav.workflows import PrepareSlices, ReseedHandler, reconstruction_strip, unwrap_network


def test_prepare_slices_flattens_stacks():
    stacks = torch.arange(2 * 3 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 3, 1, 4, 4)
    inputs, targets = PrepareSlices()({"image": stacks, "poses": torch.zeros(2, 3, 13)}, device="cpu")
    assert inputs.shape == (6, 1, 4, 4) and inputs is targets
    assert torch.equal(inputs[4], stacks[1, 1])
    with pytest.raises(KeyError, match="no 'image'"):
        PrepareSlices()({"label": stacks})
    with pytest.raises(ValueError, match=r"\(B, T, C, h, w\)"):
        PrepareSlices()({"image": stacks[0]})


def test_unwrap_network():
    inner = nn.Linear(2, 2)
    assert unwrap_network(nn.DataParallel(inner)) is inner
    assert unwrap_network(inner) is inner


def test_reconstruction_strip_layout():
    inputs = torch.rand(5, 1, 4, 6)
    recon = torch.rand(5, 1, 4, 6) * 2 - 0.5
    strip = reconstruction_strip(inputs, recon, max_slices=3)
    assert strip.shape == (8, 18)
    assert torch.equal(strip[:4, 6:12], inputs[1, 0])
    assert torch.equal(strip[4:, 12:], recon[2, 0].clamp(0, 1))


def test_reseed_handler_makes_runs_identical():
    label = SynthLabelEnsemble(spatial_size=16, num_labels=(2, 3))(0)
    chain = Compose([RandSynthAppearance(corruption_prob=0.0)])
    seen = []
    engine = Engine(lambda engine, batch: seen.append(chain(label)))
    ReseedHandler(chain, seed=3).attach(engine)
    engine.run([0], max_epochs=1)
    engine.run([0], max_epochs=1)
    assert torch.equal(seen[0], seen[1])


def test_non_finite_loss_stops_the_run_before_the_final_save(tmp_path):
    from monai.handlers import CheckpointSaver

    from monai_slicenav.workflows import NonFiniteLossError, StopOnNonFiniteLoss

    weights = torch.nn.Linear(2, 2)
    losses = iter([1.0, 0.5, float("nan"), 0.2])
    engine = Engine(lambda e, batch: {"loss": torch.tensor(next(losses))})
    StopOnNonFiniteLoss().attach(engine)  # with the trainer's handlers, before the savers
    CheckpointSaver(str(tmp_path), {"model": weights}, save_final=True, final_filename="model.pt").attach(engine)
    with pytest.raises(NonFiniteLossError, match="train_loss is nan at iteration 3"):
        engine.run(range(4), max_epochs=1)
    assert not (tmp_path / "model.pt").exists()  # the diverged weights were never saved as final


def test_reseed_per_epoch_draws_new_data_each_epoch_and_the_same_on_a_rerun():
    """Epoch e draws from seed + e: epochs differ from each other, and a resumed (or repeated) epoch e draws
    exactly what an uninterrupted run drew in epoch e."""
    transform = RandSynthAppearance()
    drawn: dict[int, list[float]] = {}
    engine = Engine(lambda e, batch: drawn.setdefault(e.state.epoch, []).append(float(transform.R.uniform())))
    ReseedHandler(transform, seed=7, per_epoch=True).attach(engine)
    engine.run(range(2), max_epochs=3)
    assert drawn[1] != drawn[2] != drawn[3]
    again = Engine(lambda e, batch: drawn.setdefault(10 + e.state.epoch, []).append(float(transform.R.uniform())))
    ReseedHandler(transform, seed=7, per_epoch=True).attach(again)
    again.state.epoch = 0
    again.run(range(2), max_epochs=2)
    assert drawn[12] == drawn[2]


def test_pruning_keeps_this_runs_checkpoint_not_a_longer_earlier_runs(tmp_path):
    """A fresh run into a folder that holds a longer run's checkpoints keeps its own file (it used to keep the
    highest epoch in the folder, deleting the file its own saver then failed to rotate)."""
    from monai_slicenav.workflows import PruneCheckpointsHandler, latest_checkpoint

    for epoch in (2, 3):  # what an interrupted earlier run left
        (tmp_path / f"checkpoint_epoch={epoch}.pt").write_bytes(b"old")
    engine = Engine(lambda engine, batch: None)
    engine.state.epoch = 1
    PruneCheckpointsHandler(tmp_path)(engine)  # epoch 1 wrote no file (yet): nothing is removed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_epoch=2.pt", "checkpoint_epoch=3.pt"]
    (tmp_path / "checkpoint_epoch=1.pt").write_bytes(b"new")
    PruneCheckpointsHandler(tmp_path)(engine)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_epoch=1.pt"]
    assert latest_checkpoint(tmp_path).endswith("checkpoint_epoch=1.pt")  # a later resume starts from this run
