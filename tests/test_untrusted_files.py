"""Files from strangers (a model zoo, a shared folder): refused with one line naming the file and the problem,
before anything is allocated or unpickled."""

import json
import pickle

import pytest
import torch

from monai_slicenav import export as export_module
from monai_slicenav.encoders import ContextEncoder, SliceEncoder
from monai_slicenav.export import export_encoder, load_encoder, load_state_dict
from monai_slicenav.networks import SliceTokenizer, TokenizerConfig


@pytest.fixture
def exported(tmp_path):
    export_encoder(SliceEncoder(TokenizerConfig(channels=(8, 16))), tmp_path / "enc")
    return tmp_path / "enc"


def rewrite(folder, change) -> None:
    path = folder / "encoder.json"
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


@pytest.mark.parametrize(
    "wording", ["Unsupported global: GLOBAL os.system was not an allowed global", "unsupported GLOBAL os.system"]
)
def test_pickle_refusal_in_either_wording_of_torch(exported, monkeypatch, wording):
    def refuse(*args, **kwargs):
        raise pickle.UnpicklingError(f"Weights only load failed. {wording} by default.")

    monkeypatch.setattr(torch, "load", refuse)
    with pytest.raises(
        ValueError, match=r"encoder\.pt: refused, the file holds pickled Python objects \(it names os\.system\)"
    ):
        load_state_dict(exported / "encoder.pt")


def test_size_bomb_refused_before_allocation(exported):
    rewrite(exported, lambda r: r["arguments"]["config"].update(channels=[100000] * 3))
    with pytest.raises(ValueError, match=r"encoder\.json: field 'arguments' asks for [\d,]+ parameters"):
        load_encoder(exported)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r.update(arguments=[1, 2]), "field 'arguments' must be an object, got list"),
        (lambda r: r.update(arguments={"config": {"chanels": [8]}}), "does not build SliceEncoder"),
        (lambda r: r.update(architecture="slicenav_teleporter"), "unsupported export"),
    ],
)
def test_malformed_records_name_the_field(exported, change, message):
    rewrite(exported, change)
    with pytest.raises(ValueError, match=message) as raised:
        load_encoder(exported)
    assert "encoder.json" in str(raised.value)


def test_meta_device_check_builds_every_architecture(tmp_path):
    tokenizer = TokenizerConfig(channels=(8, 16))
    dynamics = {"grid_size": (4, 4), "max_steps": 3, "width": 16, "depth": 1, "heads": 2, "latent_dim": 4}
    export_encoder(ContextEncoder(tokenizer, dynamics), tmp_path / "context")
    loaded = load_encoder(tmp_path / "context")
    assert all(p.device.type == "cpu" for p in loaded.parameters())
    assert export_module.MAX_ENCODER_PARAMETERS >= 2**30


def test_damaged_cache_entry_is_retrained_not_copied(tmp_path):
    from monai_slicenav.experiments.pretrain import pretrain

    cache = tmp_path / "cache"
    first = pretrain("tokenizer_only", 2, tmp_path / "out", preset="micro", cache_dir=cache)
    good = (tmp_path / "out" / "encoder" / "encoder.pt").read_bytes()
    cached = next(cache.glob("slicenav_tokenizer-*")) / "models" / "encoder" / "encoder.pt"
    cached.write_bytes(cached.read_bytes()[:100])  # truncated, as by a full disk or a killed copy
    again = pretrain("tokenizer_only", 2, tmp_path / "out", preset="micro", cache_dir=cache)
    assert not first["stages"][0]["reused"] and not again["stages"][0]["reused"]  # retrained, not reused
    assert isinstance(load_encoder(tmp_path / "out" / "encoder"), SliceEncoder)
    assert (tmp_path / "out" / "encoder" / "encoder.pt").read_bytes() == good  # seeded: the same weights again


def test_non_finite_weights_are_never_exported(exported):
    before = {p.name: p.read_bytes() for p in exported.iterdir()}
    encoder = SliceEncoder(TokenizerConfig(channels=(8, 16)))
    with torch.no_grad():
        next(encoder.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(ValueError, match="non-finite values .* training diverged"):
        export_encoder(encoder, exported)
    assert {p.name: p.read_bytes() for p in exported.iterdir()} == before  # the old export is intact


def test_weights_holding_nan_are_refused_on_load(tmp_path):
    """A checkpoint of a diverged run (one NaN) is refused by name wherever weights are loaded (exports, stage-2's
    frozen tokenizer, evaluation), instead of training or scoring on NaN."""
    state = SliceTokenizer(channels=(8, 16)).state_dict()
    state["encoder.stages.0.0.conv.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "model.pt")
    with pytest.raises(ValueError, match=r"model.pt: non-finite values \(NaN/Inf\) in 1 tensors"):
        load_state_dict(tmp_path / "model.pt")
