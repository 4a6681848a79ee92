"""Export fidelity: `slicenav export` rebuilds the network from what the trained run recorded (not from the
config's defaults), so a tokenizer trained at 32^2 slices with channels 8-16-16 exports exactly that, and the
exported encoder reproduces the trained one's outputs."""

import json

import torch

from monai_slicenav.cli import main
from monai_slicenav.encoders import trained_network
from monai_slicenav.export import load_encoder

from .harness import record
from .inputs import trained_copy

KLASS = "export fidelity"


def test_slicenav_export_rebuilds_what_was_trained(tokenizer_bundle, tmp_path):
    bundle = trained_copy(tokenizer_bundle, tmp_path)
    main(["export", str(bundle), "--out", str(tmp_path / "out")])
    exported = json.loads((tmp_path / "out" / "encoder.json").read_text())
    assert exported["input"]["slice_size"] == [32, 32]  # the config's default is 128
    assert exported["arguments"]["config"]["channels"] == [8, 16, 16]  # the default is 32-64-128
    encoder, trained = load_encoder(tmp_path / "out").eval(), trained_network(bundle, load_weights=True).eval()
    slices = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(encoder(slices), trained.encoder(slices))
    record(KLASS, "slicenav export", "tokenizer trained at 32^2, channels 8-16-16")
