"""Data of the few-shot segmentation bundle: real template volumes with coarse anatomical labels merged from atlases
(the merge table is ``data_manifests/coarse_labels.json``), and seeded deformed, re-contrasted copies of them.

Default protocol (:func:`fewshot_split`): the n training cases are the training subject (Colin27, AAL merged to
five cortical classes) and n - 1 seeded copies of it; the test case is a different template labelled by a different
atlas (FSL MNI152, Harvard-Oxford cortical merged to the same classes). Copies are not new anatomy: they stand in for
extra labelled subjects where the installed data has no more, and the docs say so. Pass your own datalists (e.g.
from ``monai_slicenav.data.manifest_datalist``) for real few-shot studies.
"""

from __future__ import annotations

import json

from .packaged import load_packaged_manifest, locate_volume, manifest_dir

__all__ = [
    "COARSE_LABELS",
    "load_coarse_labels",
    "coarse_label_names",
    "labelled_case",
    "fewshot_split",
    "missing_image",
]

COARSE_LABELS = "coarse_labels.json"
TRAIN_PAIR, TEST_PAIR = "colin27_brain_aal", "mni152_harvard_oxford"


def load_coarse_labels() -> dict:
    """The merge table: ``classes`` (index -> name) and, per packaged pair, ``merge`` (atlas value -> class)."""
    return json.loads((manifest_dir() / COARSE_LABELS).read_text())


def coarse_label_names() -> list[str]:
    """Class names by index, background first."""
    classes = load_coarse_labels()["classes"]
    return [classes[str(i)].split(" ")[0] for i in range(len(classes))]


def labelled_case(pair_name: str, copy_seed: int | None = None) -> dict:
    """A datalist item for ``EmbeddedVolumed`` + ``CoarseLabelsd`` (:mod:`monai_slicenav.transforms`): a packaged
    pair with a merge table; ``copy_seed`` makes it a deformed, re-contrasted copy (``DeformedCopyd``).

    Raises:
        KeyError: for a pair without a merge table.
        FileNotFoundError: when the pair's files are not installed (``pip install "monai_slicenav[data]"``, Debian
            ``mricron-data``).
    """
    table = load_coarse_labels()["pairs"]
    if pair_name not in table:
        raise KeyError(f"No coarse label table for {pair_name!r}; known: {sorted(table)}.")
    manifest = load_packaged_manifest()
    volumes = {v["id"]: v for v in manifest["volumes"]}
    pair = next(p for p in manifest["pairs"] if p["name"] == pair_name)
    image, label = locate_volume(volumes[pair["image"]]), locate_volume(volumes[pair["label"]])
    if image is None or label is None:
        absent = [volumes[pair[role]]["id"] for role, path in (("image", image), ("label", label)) if path is None]
        raise FileNotFoundError(
            f'{pair_name}: {absent} not installed on this machine (pip install "monai_slicenav[data]"; Debian '
            "mricron-data for the Colin27 volumes)."
        )
    item = {
        "source": "packaged",
        "name": pair_name if copy_seed is None else f"{pair_name}_copy{copy_seed}",
        "image": str(image),
        "label": str(label),
        "resample": pair.get("resample"),
        "pair": pair_name,
    }
    if copy_seed is not None:
        item["copy_seed"] = int(copy_seed)
    return item


def fewshot_split(num_train: int, seed: int = 0) -> dict[str, list[dict]]:
    """The default few-shot protocol (see the module docstring): ``{"train": n cases, "test": [held-out case]}``.

    Raises:
        ValueError: for ``num_train < 1``.
    """
    if num_train < 1:
        raise ValueError(f"num_train must be >= 1, got {num_train}.")
    train = [labelled_case(TRAIN_PAIR)] + [labelled_case(TRAIN_PAIR, 1000 * seed + k) for k in range(1, num_train)]
    return {"train": train, "test": [labelled_case(TEST_PAIR)]}


def missing_image() -> list[dict]:
    """Raise the error an inference config without ``--image`` should give.

    Raises:
        ValueError: always, saying which option is missing.
    """
    raise ValueError("No image to segment: pass --image path/to/t1.nii.gz.")
