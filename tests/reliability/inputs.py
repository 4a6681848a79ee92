"""Bad (and good) inputs of the sweep: small scans written to disk, a trained tokenizer bundle copied with its
configs, and ways to spoil them."""

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from ..helpers import BUNDLES


def head(shape=(30, 28, 26), seed: int = 0) -> np.ndarray:
    """A bright noisy box (the head) in a dark background."""
    data = np.zeros(shape, np.float32)
    data[6:24, 5:22, 5:20] = 1 + np.random.default_rng(seed).random((18, 17, 15))
    return data


def save(path: Path, data: np.ndarray, affine=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else np.asarray(affine)), str(path))
    return path


def with_nan(data: np.ndarray) -> np.ndarray:
    data = data.copy()
    data[10, 10, 10] = np.nan
    return data


def trained_copy(tokenizer_bundle: Path, root: Path, bundle: str = "slicenav_tokenizer") -> Path:
    """``bundle``'s configs, docs and licence with the session's trained tokenizer weights and exports."""
    target = root / bundle
    shutil.copytree(BUNDLES / bundle, target, ignore=shutil.ignore_patterns("models", "eval", "data"))
    shutil.copytree(tokenizer_bundle / "models", target / "models", ignore=shutil.ignore_patterns("checkpoint_*"))
    return target


def spoil_weights(path: Path) -> None:
    """Put one NaN into the first floating-point tensor of the state dict at ``path``."""
    state = torch.load(path, weights_only=True)
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key].view(-1)[0] = float("nan")
    torch.save(state, path)


def segmentation_bundle(root: Path) -> Path:
    """A segmentation bundle root as training leaves it (its record and weights; random weights, from scratch)."""
    import json

    from monai.bundle import ConfigParser

    from ..helpers import configs_dir

    models = root / "models"
    models.mkdir(parents=True)
    settings = {"num_classes": 6, "spacing_mm": 4.0, "roi_size": 32, "decoder_channels": [8, 8, 8], "encoder": None}
    (models / "training.json").write_text(json.dumps(settings))
    parser = ConfigParser()
    parser.read_config(str(configs_dir("slicenav_segmentation") / "inference.yaml"))
    parser["bundle_root"] = str(root)
    torch.save(parser.get_parsed_content("network_def").state_dict(), models / "model.pt")
    return root


def rewrite(folder: Path, change) -> None:
    """Apply ``change`` to the record (a dict) in ``folder/encoder.json`` and write it back."""
    path = folder / "encoder.json"
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))
