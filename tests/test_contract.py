"""The preprocessing contract: every export records what its inputs looked like, ``preprocessing`` turns that into
MONAI transforms that reproduce the training inputs, and a lifted encoder warns once when its inputs differ."""

import json
import logging

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

from monai_slicenav.downstream import Lift3D
from monai_slicenav.encoders import SliceEncoder, export_encoder, input_contract, load_encoder, training_contract
from monai_slicenav.export import preprocessing
from monai_slicenav.networks.tokenizer import TokenizerConfig
from monai_slicenav.transforms import LoadVolumed

from .test_own_scans import ORIENTED, head


def exported(tmp_path, contract=None):
    encoder = SliceEncoder(TokenizerConfig(channels=(4, 8, 8)))
    spec = {"normalisation": "text"} if contract is None else {"contract": contract}
    export_encoder(encoder, tmp_path / "encoder", input_spec=spec)
    return tmp_path / "encoder"


def test_the_transforms_reproduce_what_pretraining_fed_the_encoder(tmp_path):
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(head(seed=2), ORIENTED["pir"]), str(path))  # permuted, anisotropic
    chain = Compose([LoadImaged("image"), EnsureChannelFirstd("image"), *preprocessing(exported(tmp_path)).transforms])
    theirs = chain({"image": str(path)})["image"]
    ours = LoadVolumed()({"source": "file", "image": str(path)})["image"]
    assert theirs.shape == ours.shape and torch.allclose(theirs.affine.double(), ours.affine.double())
    assert float((theirs - ours).abs().max()) < 0.02  # percentiles interpolated by MONAI, order statistics by us
    assert float(theirs.min()) == 0.0 and float(theirs.max()) == 1.0


def test_a_recorded_voxel_size_resamples_images_and_labels(tmp_path):
    source = exported(tmp_path, training_contract(spacing_mm=2.0))
    assert input_contract(source)["spacing_mm"] == 2.0 and input_contract(load_encoder(source))["spacing_mm"] == 2.0
    volume = MetaTensor(torch.rand(1, 20, 20, 20), affine=torch.eye(4))
    labels = MetaTensor(torch.randint(0, 3, (1, 20, 20, 20)).float(), affine=torch.eye(4))
    out = preprocessing(source, "image", "label")({"image": volume, "label": labels})
    assert out["image"].shape[1:] == (10, 10, 10) and set(out["label"].unique().tolist()) <= {0.0, 1.0, 2.0}


def test_an_export_records_its_contract_and_older_ones_get_the_package_rule(tmp_path):
    old = exported(tmp_path)  # no contract: written before 0.8.0
    assert input_contract(old) == training_contract()
    record = json.loads((exported(tmp_path / "new", training_contract()) / "encoder.json").read_text())
    assert record["input"]["contract"]["intensity"]["percentiles"] == [0.5, 99.5]


def test_a_lifted_encoder_warns_once_when_its_inputs_differ(tmp_path, caplog):
    lifted = Lift3D(load_encoder(exported(tmp_path, training_contract(spacing_mm=1.0))), window=8)
    with caplog.at_level(logging.WARNING):
        lifted(MetaTensor(torch.rand(1, 1, 16, 16, 16), affine=torch.eye(4)))  # as trained: silent
        assert not caplog.records
        lifted.input_check.done = False
        scaled = MetaTensor(
            torch.linspace(-1, 1, 16**3).reshape(1, 1, 16, 16, 16), affine=torch.diag(torch.tensor([2.0, 2, 2, 1]))
        )
        lifted(scaled)
        lifted(scaled)
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "intensities span [-1" in warning and "trained on [0, 1]" in warning
    assert "voxels of 2x2x2 mm, trained on 1 mm" in warning and "preprocessing" in warning
    assert np.isfinite(lifted.features(scaled).sum().item())
