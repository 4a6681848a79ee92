import json
from collections import OrderedDict

import pytest
import torch

from monai_slicenav.encoders import ContextEncoder, VolumeEncoder, expand_input_channels, input_channels, load_encoder
from monai_slicenav.export import SliceEncoder, export_encoder, load_state_dict, strip_prefixes
from monai_slicenav.networks import SliceTokenizer, TokenizerConfig, VolumeMAEConfig

TINY = {"channels": (8, 16), "num_res_units": 1, "fsq_levels": (5, 4, 3)}


class Payload:
    """Stands for an arbitrary pickled object in a malicious checkpoint."""


@pytest.fixture
def exported(tmp_path):
    torch.manual_seed(0)
    tokenizer = SliceTokenizer(**TINY)
    encoder = SliceEncoder.from_tokenizer(tokenizer)
    paths = export_encoder(
        encoder,
        tmp_path / "export",
        input_spec={"normalisation": "percentiles 0.5-99.5 -> [0, 1]", "slice_size": [32, 32], "spacing_mm": 1.0},
        provenance={"bundle": "test", "steps": 3},
    )
    return tokenizer, encoder, paths


def test_round_trip_reproduces_outputs(exported):
    tokenizer, encoder, (weights, meta) = exported
    x = torch.rand(3, 1, 32, 32)
    loaded = SliceEncoder.from_pretrained(weights.parent).eval()
    encoder.eval()
    assert torch.equal(loaded(x), encoder(x))
    assert torch.equal(encoder(x), tokenizer.encoder(x))
    record = json.loads(meta.read_text())
    assert record["architecture"] == "slice_tokenizer_encoder" and record["out_channels"] == 3
    assert record["input"]["slice_size"] == [32, 32] and record["provenance"]["steps"] == 3
    assert set(torch.load(weights, weights_only=True)) == set(encoder.state_dict())


def test_quantized_view_matches_tokenizer_tokens(exported):
    tokenizer, _, (weights, _) = exported
    x = torch.rand(2, 1, 32, 32)
    quantized = SliceEncoder.from_tokenizer(tokenizer.eval(), quantize=True).eval()
    assert torch.equal(quantized(x), tokenizer.encode(x))


def test_pickled_object_refused(exported, tmp_path):
    _, encoder, (weights, _) = exported
    state = dict(encoder.state_dict())
    state["payload"] = Payload()
    torch.save(state, weights)
    with pytest.raises(ValueError, match="refused, the file holds pickled Python objects"):
        SliceEncoder.from_pretrained(weights)
    whole_module = tmp_path / "module.pt"
    torch.save(encoder, whole_module)
    with pytest.raises(ValueError, match="pickled Python objects"):
        load_state_dict(whole_module)


def test_key_mismatch_names_the_keys(exported):
    _, encoder, (weights, _) = exported
    state = OrderedDict(encoder.state_dict())
    renamed = next(iter(state))
    state["extra.weight"] = state.pop(renamed)
    torch.save(state, weights)
    with pytest.raises(ValueError, match=rf"missing keys \['{renamed}'\]; unexpected keys \['extra.weight'\]"):
        SliceEncoder.from_pretrained(weights)
    partial = SliceEncoder.from_pretrained(weights, strict=False)
    assert not torch.equal(partial.state_dict()[renamed], encoder.state_dict()[renamed])  # left at its init


def test_shape_mismatch_named(exported):
    _, encoder, (weights, _) = exported
    state = dict(encoder.state_dict())
    key = next(k for k, v in state.items() if v.ndim == 4)
    state[key] = torch.zeros(1, 1, 1, 1)
    torch.save(state, weights)
    with pytest.raises(ValueError, match=f"parameter shapes differ.*{key}"):
        SliceEncoder.from_pretrained(weights, strict=False)


def test_prefixes_stripped(exported):
    _, encoder, (weights, _) = exported
    state = {f"module._orig_mod.{k}": v for k, v in encoder.state_dict().items()}
    torch.save(state, weights)
    loaded = SliceEncoder.from_pretrained(weights)
    x = torch.rand(1, 1, 32, 32)
    assert torch.equal(loaded.eval()(x), encoder.eval()(x))
    assert list(strip_prefixes({"module.a": torch.zeros(1)})) == ["a"]


def test_missing_and_bad_files(exported, tmp_path):
    _, _, (weights, meta) = exported
    with pytest.raises(FileNotFoundError, match="encoder.pt and encoder.json"):
        SliceEncoder.from_pretrained(tmp_path / "nowhere")
    meta.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        SliceEncoder.from_pretrained(weights)
    meta.write_text(json.dumps({"format": 1, "architecture": "resnet"}))
    with pytest.raises(ValueError, match="unsupported export.*'resnet'"):
        SliceEncoder.from_pretrained(weights)
    weights.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable torch checkpoint"):
        load_state_dict(weights)


@pytest.mark.parametrize("kind", ["slice", "context", "volume"])
def test_a_single_channel_encoder_reads_c_channels(kind, tmp_path):
    """Mean mode: C copies of one image give exactly the single-channel features; the expanded encoder exports and
    loads as a C-channel one."""
    torch.manual_seed(0)
    tokenizer = TokenizerConfig(channels=(8, 16, 16))
    dynamics = {"latent_dim": 4, "grid_size": (2, 2), "max_steps": 4, "patch": 2, "width": 16, "depth": 1, "heads": 2}
    encoder = {
        "slice": lambda: SliceEncoder(tokenizer),
        "context": lambda: ContextEncoder(tokenizer, dynamics),
        "volume": lambda: VolumeEncoder(VolumeMAEConfig(channels=(8, 16, 16))),
    }[kind]().eval()
    wide = expand_input_channels(encoder, 4)
    x = torch.rand(2, 1, *((16, 16, 16) if kind == "volume" else (32, 32)))
    with torch.no_grad():
        torch.testing.assert_close(wide(x.expand(-1, 4, *x.shape[2:])), encoder(x))
        export_encoder(wide, tmp_path / "wide")
        torch.testing.assert_close(load_encoder(tmp_path / "wide")(x.repeat(1, 4, *(1,) * (x.ndim - 2))), encoder(x))
    assert input_channels(load_encoder(tmp_path / "wide")) == 4
    with pytest.raises(ValueError, match="single-channel"):
        expand_input_channels(wide, 2)


def test_load_encoder_takes_c_channels_and_a_four_channel_unet_finetunes(tmp_path):
    from monai.networks.nets import FlexibleUNet

    from monai_slicenav.downstream.lift3d import register_backbone

    torch.manual_seed(0)
    encoder = SliceEncoder(TokenizerConfig(channels=(8, 16, 16))).eval()
    export_encoder(encoder, tmp_path / "encoder")
    four = load_encoder(tmp_path / "encoder", in_channels=4).eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(four(x.expand(-1, 4, -1, -1)), encoder(x))
    net = FlexibleUNet(in_channels=4, out_channels=2, spatial_dims=3, pretrained=True, decoder_channels=(8, 8, 8),
                       backbone=register_backbone("slicenav-finetune-test", tmp_path / "encoder"))  # fmt: skip
    volume = torch.rand(1, 4, 16, 16, 16, generator=torch.Generator().manual_seed(1))
    target = (volume[:, :1] > 0.5).long()[:, 0]
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(6):
        loss = torch.nn.functional.cross_entropy(net(volume), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
