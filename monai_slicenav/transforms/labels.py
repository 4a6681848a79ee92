"""Label-map transforms of the downstream bundles: atlas labels merged to coarse classes, and seeded deformed,
re-contrasted copies of labelled cases (the few-shot protocol of :mod:`monai_slicenav.data.labelled`)."""

from __future__ import annotations

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

from ..data.labelled import load_coarse_labels

__all__ = ["CoarseLabelsd", "DeformedCopyd"]


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
