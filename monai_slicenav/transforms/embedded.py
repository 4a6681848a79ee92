"""One front end for the embedded default data: synthetic items and packaged real volumes alike become an image in
[0, 1] and an integer label map, as MetaTensors with their affines.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    LoadImage,
    MapTransform,
    Orientation,
    Randomizable,
    ResampleToMatch,
    Spacing,
    Transform,
)
from monai.utils import TransformBackends

from ..volume import (
    INTENSITY_PERCENTILES,
    as_volume,
    check_scan,
    checked_percentiles,
    level_boundary,
    scale_intensity,
)
from .synth import RandSynthAppearance, SynthLabelEnsemble

__all__ = [
    "tissue_labels",
    "otsu_threshold",
    "CheckScan",
    "CheckScand",
    "LoadVolumed",
    "EmbeddedVolumed",
    "volume_loader",
]


def tissue_labels(grey: torch.Tensor, white: torch.Tensor) -> torch.Tensor:
    """Tissue labels from grey/white-matter probability maps on a 0-255 scale: argmax over (background, grey, white)
    with background = 255 - grey - white clipped at 0; 0 background/CSF, 1 grey matter, 2 white matter."""
    background = (255.0 - grey - white).clamp_min(0.0)
    return torch.stack([background, grey, white]).argmax(dim=0)


def otsu_threshold(image: torch.Tensor, bins: int = 256) -> float:
    """Otsu's threshold of intensities in [0, 1]: the cut of a ``bins``-bin histogram that maximises the
    between-class variance (background against head). Written here because MONAI has none and scikit-image is not a
    dependency."""
    values = torch.as_tensor(image).float().flatten().clamp(0.0, 1.0)
    counts = torch.histc(values, bins=bins, min=0.0, max=1.0).double()
    centres = (torch.arange(bins, dtype=torch.float64) + 0.5) / bins
    below = counts.cumsum(0)
    mass_below = (counts * centres).cumsum(0)
    above = counts.sum() - below
    mean_below = mass_below / below.clamp_min(1)
    mean_above = (mass_below[-1] - mass_below) / above.clamp_min(1)
    between = below * above * (mean_below - mean_above) ** 2
    return float(centres[int(between.argmax())] + 0.5 / bins)


class CheckScan(Transform):
    """Refuse a loaded scan that would give silently wrong results (NaN/Inf, constant, degenerate voxels, a side
    under 2 voxels; non-integer values when ``label``), naming its file; see
    :func:`~monai_slicenav.volume.check_scan`. The scan passes through unchanged."""

    backend = [TransformBackends.TORCH]

    def __init__(self, label: bool = False) -> None:
        self.label = label

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        name = img.meta.get("filename_or_obj", "image") if isinstance(img, MetaTensor) else "image"
        return check_scan(img, str(name), label=self.label)


class CheckScand(MapTransform):
    """Dictionary version of :class:`CheckScan` (e.g. after MONAI's ``LoadImaged`` in an inference chain)."""

    backend = CheckScan.backend

    def __init__(self, keys: KeysCollection, label: bool = False, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.check = CheckScan(label)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.check(d[key])
        return d


class LoadVolumed(MapTransform):
    """Load a ``"packaged"`` or ``"file"`` item of :func:`~monai_slicenav.data.embedded_datalist` (or
    :func:`~monai_slicenav.data.file_datalist`) into ``image`` (and ``label``), deterministically.

    * ``{"source": "packaged", "image": path, "label": path | "probabilities": [grey, white], "resample": ...}``:
      loaded, reoriented to RAS, the label resampled onto the image grid when the item states a method, intensities
      scaled to [0, 1] (0.5th-99.5th percentile, clipped), labels as int64.
    * ``{"source": "file", "image": path}``: any image of your own, loaded and scaled the same way; with
      ``"label": path`` too, its label map is loaded as well (resampled onto the image grid when the item says
      ``"resample": "nearest"``).

    Being deterministic, its output can be cached (:class:`~monai_slicenav.data.ScreenedVolumeDataset`; real volumes
    need no random appearance); :class:`EmbeddedVolumed` handles synthetic items too.

    Args:
        image_key: output key of the image. Defaults to ``"image"``.
        label_key: output key of the label map. Defaults to ``"label"``.
        foreground_label: for file items without a label, store the image's foreground (intensity above
            :func:`otsu_threshold`, as 0/1 uint8: an eighth of int64 in memory and in a cache) under
            ``label_key``, so that trajectories are bounded by the head whatever the scan. Defaults to False.
        resample_mm: resample every loaded image (bilinear) and label map (nearest) to this isotropic voxel size
            in mm after reorienting, e.g. to bring 0.5 mm scans to 1 mm (an eighth of the memory and cache).
            None (default): keep each file's grid (slices are rendered in world millimetres either way).
        percentiles: the intensity percentiles mapped to 0 and 1 (clipped) of loaded images; defaults to the
            package's rule, :data:`~monai_slicenav.volume.INTENSITY_PERCENTILES` (an encoder's recorded contract may
            name others: :func:`~monai_slicenav.export.input_contract`).

    Raises:
        ValueError: for an item whose source is neither ``"packaged"`` nor ``"file"``, or bad ``percentiles``.
    """

    sources = "'packaged' or 'file'"  # named in the error for an unknown source

    def __init__(
        self,
        image_key: str = "image",
        label_key: str = "label",
        foreground_label: bool = False,
        resample_mm: float | None = None,
        percentiles: Sequence[float] = INTENSITY_PERCENTILES,
    ) -> None:
        MapTransform.__init__(self, (image_key, label_key))
        self.percentiles = checked_percentiles(percentiles)  # refused here, not at the first scan
        self.image_key, self.label_key = image_key, label_key
        self.foreground_label = bool(foreground_label)
        if resample_mm is not None and not float(resample_mm) > 0:
            raise ValueError(f"resample_mm must be a voxel size in mm > 0 or None, got {resample_mm!r}.")
        self.resample_mm = None if resample_mm is None else float(resample_mm)
        self.resample = {
            mode: Spacing(pixdim=self.resample_mm, mode=mode) for mode in ("bilinear", "nearest") if self.resample_mm
        }
        self.load = LoadImage(image_only=True, ensure_channel_first=True)
        self.orient = Orientation(axcodes="RAS", labels=None)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        source = d.get("source")
        if source == "packaged" or (source == "file" and "label" in d):
            d[self.image_key], d[self.label_key] = self._load_pair(d)
        elif source == "file":
            d[self.image_key] = image = scale_intensity(self._read(d["image"]), self.percentiles)
            if self.foreground_label:
                threshold = level_boundary(
                    otsu_threshold(image)
                )  # reproduced exactly by the volume store's uint8 image
                mask = (image.as_tensor() > threshold).any(dim=0, keepdim=True).to(torch.uint8)
                d[self.label_key] = MetaTensor(mask, affine=image.affine, meta={"filename_or_obj": data["image"]})
        else:
            raise ValueError(
                f"{type(self).__name__}: unknown source {source!r} in item {d.get('name', '?')}; expected "
                f"{self.sources}."
            )
        return d

    def _read(self, path: str, label: bool = False) -> MetaTensor:
        """``path`` loaded, reoriented to RAS and checked (:func:`~monai_slicenav.volume.check_scan`), keeping of
        its metadata the affine and the file name only (numpy header fields would keep a cached copy from loading
        with ``weights_only=True``; nothing downstream reads them)."""
        try:
            loaded = self.load(path)
        except Exception as err:  # readers raise many types (nibabel, gzip, EOF, ...): all are this file's problem
            raise ValueError(f"{path}: cannot read the image ({type(err).__name__}: {err}).") from err
        as_volume(loaded, str(path), check_values=False)  # shape and affine first: reorienting a singular one fails
        volume = self.orient(loaded)
        if self.resample:
            volume = self.resample["nearest" if label else "bilinear"](volume)
        volume = check_scan(volume, str(path), label=label)
        return MetaTensor(volume.as_tensor(), affine=volume.affine, meta={"filename_or_obj": str(path)})

    def _load_pair(self, item: dict) -> tuple[MetaTensor, MetaTensor]:
        image = self._read(item["image"])
        if "probabilities" in item:
            grey, white = (self._read(path)[0] for path in item["probabilities"])
            label = MetaTensor(tissue_labels(grey.as_tensor(), white.as_tensor())[None], affine=grey.affine)
        else:
            label = self._read(item["label"], label=True)
        if item.get("resample"):
            label = ResampleToMatch(mode=item["resample"], padding_mode="zeros")(label, img_dst=image)
        label = label.round().to(torch.int64)
        return scale_intensity(image, self.percentiles), label


class EmbeddedVolumed(Randomizable, LoadVolumed):
    """Turn an item of :func:`~monai_slicenav.data.embedded_datalist` into ``image`` and ``label``: synthetic
    items ``{"source": "synthetic", "synth_seed": s}`` become the label map of seed ``s`` painted with a random
    appearance; packaged and file items are loaded as :class:`LoadVolumed` does.

    Args:
        image_key: output key of the image. Defaults to ``"image"``.
        label_key: output key of the label map. Defaults to ``"label"``.
        synth_options: options of :class:`~monai_slicenav.transforms.SynthLabelEnsemble`.
        appearance_options: options of :class:`~monai_slicenav.transforms.RandSynthAppearance`.
        foreground_label: as in :class:`LoadVolumed` (your own scans without label maps).
        resample_mm: as in :class:`LoadVolumed` (packaged and file items; synthetic volumes are made at 1 mm).
        percentiles: as in :class:`LoadVolumed` (packaged and file items; synthetic volumes are painted by the
            package's rule).

    Raises:
        ValueError: for an item whose source is not ``"synthetic"``, ``"packaged"`` or ``"file"``.
    """

    sources = "'synthetic', 'packaged' or 'file'"

    def __init__(
        self,
        image_key: str = "image",
        label_key: str = "label",
        synth_options: dict | None = None,
        appearance_options: dict | None = None,
        foreground_label: bool = False,
        resample_mm: float | None = None,
        percentiles: Sequence[float] = INTENSITY_PERCENTILES,
    ) -> None:
        LoadVolumed.__init__(self, image_key, label_key, foreground_label, resample_mm, percentiles)
        self.synthesise = SynthLabelEnsemble(**(synth_options or {}))
        self.paint = RandSynthAppearance(**(appearance_options or {}))

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        self.paint.set_random_state(state=self.R)
        return self

    def randomize(self, data: object = None) -> None:
        """The appearance draws from the shared random state while it is painted."""

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        if data.get("source") != "synthetic":
            return LoadVolumed.__call__(self, data)
        d = dict(data)
        label = self.synthesise(int(d["synth_seed"]))
        d[self.image_key], d[self.label_key] = self.paint(label), label
        return d


def volume_loader(
    own_scans: bool,
    foreground_label: bool = True,
    synth_options: dict | None = None,
    appearance_options: dict | None = None,
    resample_mm: float | None = None,
) -> LoadVolumed:
    """The first transform of a pretraining input chain: for your own scans a :class:`LoadVolumed` (deterministic,
    so that :class:`~monai_slicenav.data.ScreenedVolumeDataset` checks and caches its output once per volume), else
    an :class:`EmbeddedVolumed` (synthetic volumes get a fresh random appearance at every use)."""
    if own_scans:
        return LoadVolumed(foreground_label=foreground_label, resample_mm=resample_mm)
    return EmbeddedVolumed(
        synth_options=synth_options,
        appearance_options=appearance_options,
        foreground_label=foreground_label,
        resample_mm=resample_mm,
    )
