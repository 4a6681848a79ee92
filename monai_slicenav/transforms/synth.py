"""Synthetic data engine as MONAI transforms: label ensembles and randomized appearance.

The label map comes from a seed (:class:`SynthLabelEnsembled`, deterministic, so ``CacheDataset`` and
``PersistentDataset`` can cache it) or from the transform's own random state (:class:`RandSynthLabelEnsembled`).
:class:`RandSynthAppearanced` then paints one or more independent appearances of the same label map: per-label
Gaussian-mixture intensities followed by MONAI's own corruption transforms (bias field, smoothing, Gibbs ringing,
k-space spikes, gamma contrast, simulated low resolution, Gaussian noise). Two appearances of one label map are the
multi-positive pairs of voxel contrastive pretraining.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    LoadImage,
    MapTransform,
    RandAdjustContrast,
    RandBiasField,
    RandGaussianNoise,
    RandGaussianSmooth,
    RandGibbsNoise,
    RandKSpaceSpikeNoise,
    Randomizable,
    RandSimulateLowResolution,
    Transform,
)
from monai.utils import TransformBackends, ensure_tuple_rep

from ..data.packaged import packaged_pairs
from ..io import atomic_write_bytes
from ..volume import centred_affine, scale_intensity
from .synth_functional import ShapeSource, gmm_intensities, synth_label_ensemble

__all__ = [
    "SynthLabelEnsemble",
    "RandSynthLabelEnsembled",
    "SynthLabelEnsembled",
    "RandSynthAppearance",
    "RandSynthAppearanced",
]


class SynthLabelEnsemble(Transform):
    """Generate a (1, X, Y, Z) int64 label MetaTensor (centred RAS affine) from a seed: ``generator(seed)``.

    Args:
        spatial_size: (X, Y, Z) voxels, or one int for a cube. Defaults to 128.
        spacing: isotropic voxel size in mm. Defaults to 1.0.
        num_labels: inclusive (min, max) number of foreground labels. Defaults to (20, 40).
        envelope: bound the anatomy by a smooth head-like envelope. Defaults to True.
        deform_mm: standard deviation of the smooth shape deformation in mm. Defaults to 6.0.
        blob_amplitude: surface modulation of the blob shapes. Defaults to 0.35.
        clean: median-filter the label boundaries. Defaults to True.
        shape_sources: real label maps (NIfTI paths) whose regions serve as shapes, or ``"packaged"`` for the label
            maps of every installed packaged pair (:func:`~monai_slicenav.data.packaged_pairs`); loaded once, on
            first use. Defaults to None (ellipsoids and blobs only).
        atlas_fraction: with ``shape_sources``, the share of shapes that are atlas regions. Defaults to 0.5.
        cache_dir: optional disk cache: the map of an integer seed is read from
            ``cache_dir/synth_label_<options hash>_<seed>.nii.gz`` when present, else generated and written there
            atomically (reading a 128^3 map takes ~25x less time than generating it). Defaults to None.

    See :func:`~monai_slicenav.transforms.synth_functional.synth_label_ensemble`.

    Raises:
        ValueError: for bad sizes or label ranges, or ``"packaged"`` when no packaged label map is installed.
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        spatial_size: Sequence[int] | int = 128,
        spacing: float = 1.0,
        num_labels: tuple[int, int] = (20, 40),
        envelope: bool = True,
        deform_mm: float = 6.0,
        blob_amplitude: float = 0.35,
        clean: bool = True,
        shape_sources: Sequence[str | os.PathLike] | str | None = None,
        atlas_fraction: float = 0.5,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        self.spatial_size = ensure_tuple_rep(spatial_size, 3)
        if min(self.spatial_size) < 8 or spacing <= 0:
            raise ValueError(f"spatial_size must be >= 8 per axis and spacing > 0, got {spatial_size}, {spacing}.")
        if not 1 <= num_labels[0] <= num_labels[1]:
            raise ValueError(f"num_labels must satisfy 1 <= min <= max, got {num_labels}.")
        self.spacing = float(spacing)
        self.options = {
            "num_labels": (int(num_labels[0]), int(num_labels[1])),
            "envelope": envelope,
            "deform_mm": deform_mm,
            "blob_amplitude": blob_amplitude,
            "clean": clean,
            "atlas_fraction": atlas_fraction,
        }
        if shape_sources == "packaged":
            shape_sources = sorted({item["label"] for item in packaged_pairs() if "label" in item})
            if not shape_sources:
                raise ValueError("shape_sources='packaged' but no packaged label map is installed ('.[data]' extra).")
        self.source_paths = [str(path) for path in shape_sources or ()]
        self._sources: list[ShapeSource] | None = None
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        options = json.dumps([self.spatial_size, self.spacing, self.options, self.source_paths])
        self._options_tag = hashlib.sha256(options.encode()).hexdigest()[:12]

    def __call__(self, seed: int | np.random.RandomState) -> MetaTensor:
        if self.cache_dir is None or isinstance(seed, np.random.RandomState):
            return self._generate(seed)
        path = self.cache_dir / f"synth_label_{self._options_tag}_{int(seed)}.nii.gz"
        if path.is_file():
            return LoadImage(image_only=True, ensure_channel_first=True, dtype=np.int64)(str(path))
        label = self._generate(seed)
        image = nib.Nifti1Image(label[0].numpy().astype(np.int16), label.affine.numpy())
        atomic_write_bytes(path, gzip.compress(image.to_bytes(), compresslevel=1))
        return label

    def _generate(self, seed: int | np.random.RandomState) -> MetaTensor:
        rng = seed if isinstance(seed, np.random.RandomState) else np.random.RandomState(int(seed) % 2**32)
        if self._sources is None:
            self._sources = [_load_shape_source(path) for path in self.source_paths]
        labels = synth_label_ensemble(rng, self.spatial_size, self.spacing, shape_sources=self._sources, **self.options)
        return MetaTensor(labels[None], affine=centred_affine(self.spatial_size, self.spacing))


def _load_shape_source(path: str) -> ShapeSource:
    """A NIfTI label map as a :class:`ShapeSource` (orientation is irrelevant: shapes are rotated at random)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such label map (shape source).")
    return ShapeSource.from_labels(torch.from_numpy(np.asanyarray(nib.load(path).dataobj).astype(np.float32)))


class SynthLabelEnsembled(MapTransform):
    """Deterministic dictionary transform: the label map under each key is generated from ``data[seed_key]``.

    Being deterministic it is also cached by ``CacheDataset``/``PersistentDataset``.

    Args:
        keys: output key(s) of the label map, e.g. ``"label"``.
        seed_key: key of the integer seed in the input. Defaults to ``"synth_seed"``.
        kwargs: options of :class:`SynthLabelEnsemble`, e.g. ``cache_dir`` for its disk cache.

    Raises:
        KeyError: when the input has no seed.
    """

    backend = SynthLabelEnsemble.backend

    def __init__(self, keys: KeysCollection, seed_key: str = "synth_seed", **kwargs) -> None:
        super().__init__(keys)
        self.generator = SynthLabelEnsemble(**kwargs)
        self.seed_key = seed_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        if self.seed_key not in d:
            raise KeyError(f"SynthLabelEnsembled: the input has no seed under {self.seed_key!r} (keys: {list(d)}).")
        for key in self.keys:
            d[key] = self.generator(int(d[self.seed_key]))
        return d


class RandSynthLabelEnsembled(Randomizable, MapTransform):
    """Random dictionary transform: a new label map from the transform's random state under each key.

    Args:
        keys: output key(s) of the label map.
        kwargs: options of :class:`SynthLabelEnsemble`.
    """

    backend = SynthLabelEnsemble.backend

    def __init__(self, keys: KeysCollection, **kwargs) -> None:
        MapTransform.__init__(self, keys)
        self.generator = SynthLabelEnsemble(**kwargs)
        self._seed = 0

    def randomize(self, data: object = None) -> None:
        self._seed = int(self.R.randint(2**31 - 1))

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.keys:
            self.randomize()
            d[key] = self.generator(self._seed)
        return d


def _corruptions(prob: float) -> list[Randomizable]:
    """MONAI's corruption transforms in the order a scanner would apply them; ``prob`` scales every probability."""
    return [
        RandBiasField(degree=3, coeff_range=(0.0, 0.3), prob=min(1.0, 0.8 * prob)),
        RandGaussianSmooth(sigma_x=(0.3, 1.0), sigma_y=(0.3, 1.0), sigma_z=(0.3, 1.0), prob=min(1.0, 0.3 * prob)),
        RandGibbsNoise(alpha=(0.1, 0.5), prob=min(1.0, 0.2 * prob)),
        RandKSpaceSpikeNoise(prob=min(1.0, 0.1 * prob)),
        RandSimulateLowResolution(zoom_range=(0.4, 0.9), prob=min(1.0, 0.3 * prob)),
        RandAdjustContrast(gamma=(0.6, 1.6), prob=min(1.0, 0.5 * prob)),
        RandGaussianNoise(std=0.03, prob=min(1.0, 0.8 * prob)),
    ]


class RandSynthAppearance(Randomizable, Transform):
    """Paint a random appearance on a (1, X, Y, Z) label map: a float32 image in [0, 1] with the label's affine,
    scaled by the rule real scans go through (:func:`~monai_slicenav.volume.scale_intensity`: the 0.5th and 99.5th
    percentiles to 0 and 1, clipped), so both share one intensity range.

    Args:
        components: Gaussians per label. Defaults to 2.
        max_std: largest within-component standard deviation (intensities in [0, 1]). Defaults to 0.08.
        corruption_prob: multiplies the probabilities of the MONAI corruption transforms (0 turns them off).
            Defaults to 1.0.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, components: int = 2, max_std: float = 0.08, corruption_prob: float = 1.0) -> None:
        if components < 1 or max_std < 0 or corruption_prob < 0:
            raise ValueError(
                f"components must be >= 1, max_std and corruption_prob >= 0; got {components}, {max_std}, "
                f"{corruption_prob}."
            )
        self.components = components
        self.max_std = max_std
        self.corrupt = Compose(_corruptions(corruption_prob))
        self.corrupt.set_random_state(state=self.R)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        self.corrupt.set_random_state(state=self.R)
        return self

    def randomize(self, data: object = None) -> None:
        """The appearance draws from ``self.R`` while it runs (as do the corruption transforms)."""

    def __call__(self, label: torch.Tensor) -> MetaTensor:
        if label.ndim != 4 or label.shape[0] != 1:
            raise ValueError(f"Expected a (1, X, Y, Z) label map, got shape {tuple(label.shape)}.")
        indices = (label.as_tensor() if isinstance(label, MetaTensor) else torch.as_tensor(label))[0].long()
        if bool((indices < 0).any()):
            raise ValueError("Label maps must hold non-negative integer labels.")
        image = gmm_intensities(self.R, indices, self.components, self.max_std)[None]
        affine = label.affine if isinstance(label, MetaTensor) else torch.eye(4, dtype=torch.float64)
        image = self.corrupt(MetaTensor(image, affine=affine))
        return scale_intensity(image)


class RandSynthAppearanced(Randomizable, MapTransform):
    """Dictionary wrapper of :class:`RandSynthAppearance`: an independent appearance of ``data[label_key]`` under
    each key, e.g. ``keys=("image", "image_view2")`` for two views of one anatomy.

    Args:
        keys: output image key(s).
        label_key: key of the (1, X, Y, Z) label map. Defaults to ``"label"``.
        components, max_std, corruption_prob: as in :class:`RandSynthAppearance`.
    """

    backend = RandSynthAppearance.backend

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str = "label",
        components: int = 2,
        max_std: float = 0.08,
        corruption_prob: float = 1.0,
    ) -> None:
        MapTransform.__init__(self, keys)
        self.painter = RandSynthAppearance(components, max_std, corruption_prob)
        self.label_key = label_key

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        self.painter.set_random_state(state=self.R)
        return self

    def randomize(self, data: object = None) -> None:
        """Appearances draw from the shared random state while they are painted."""

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        if self.label_key not in d:
            raise KeyError(f"RandSynthAppearanced: no label map under {self.label_key!r} (keys: {list(d)}).")
        for key in self.keys:
            d[key] = self.painter(d[self.label_key])
        return d
