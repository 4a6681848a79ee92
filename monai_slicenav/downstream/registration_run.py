"""Registration pairs and the end-to-end run behind the registration bundle: load, resample onto the fixed grid,
register with encoder features or intensities, score and write the outputs."""

from __future__ import annotations

import csv
import io
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import torch
from monai.transforms import Compose, ResampleToMatchd, Spacingd, SpatialPadd

from ..data.labelled import coarse_label_names, labelled_case
from ..encoders import input_contract, load_encoder
from ..io import atomic_write_files, atomic_write_json
from ..transforms import CoarseLabelsd, DeformedCopyd, EmbeddedVolumed, RandSynthAppearance
from .lift3d import Lift3D
from .registration import (
    FEATURE_SIMILARITIES,
    RegistrationConfig,
    feature_levels,
    intensity_levels,
    label_dice,
    negative_jacobian_fraction,
    register,
    warp_volume,
    write_registration,
)

__all__ = [
    "default_pairs",
    "benchmark_pairs",
    "t2_like",
    "file_pair",
    "load_pair",
    "run_registration",
    "compare_similarities",
    "synthetic_contrast",
    "CROSS_CONTRASTS",
]

logger = logging.getLogger(__name__)


def default_pairs() -> list[dict]:
    """The default pairs, each ``{"name", "fixed", "moving"}`` of labelled-case items:

    * ``colin27_deformed``: Colin27 against a seeded, smoothly deformed (``copy_magnitude``, in voxels of the
      resampled grid through MONAI ``Rand3DElastic``) and re-contrasted copy of itself (known ground truth: the
      labels moved with the image);
    * ``mni152_to_colin27``: the FSL MNI152 template (Harvard-Oxford lobes) onto Colin27 (AAL lobes), two real
      templates sharing the coarse label set.
    """
    colin = labelled_case("colin27_brain_aal")
    return [
        {"name": "colin27_deformed", "fixed": colin, "moving": {**colin, "copy_seed": 7, "copy_magnitude": [150, 250]}},
        {"name": "mni152_to_colin27", "fixed": colin, "moving": labelled_case("mni152_harvard_oxford")},
    ]


def t2_like(image: torch.Tensor, foreground: float = 0.02) -> torch.Tensor:
    """A T1-weighted image in [0, 1] re-painted with another, non-monotonic contrast: ``4 t (1 - t)`` inside the
    head (``t > foreground``), 0 outside, so grey matter (mid T1) turns bright while CSF (dark) and white matter
    (bright) turn dark: the intensities of the two images are no longer a monotonic (or inverted) function of each
    other, which local correlation assumes and mutual information and contrast-agnostic features do not."""
    return torch.where(image > foreground, 4.0 * image * (1.0 - image), torch.zeros_like(image))


def synthetic_contrast(image: torch.Tensor, seed: int = 0, classes: int = 4, foreground: float = 0.02) -> torch.Tensor:
    """A T1-weighted image in [0, 1] re-painted by the synthetic engine's appearance model: the head
    (``t > foreground``) is cut into ``classes`` intensity classes of equal size (quantiles: roughly CSF, grey and
    white matter and their mixtures), and :class:`~monai_slicenav.transforms.RandSynthAppearance` (seeded, no
    corruptions) paints each class a random intensity, generally not a monotonic function of the original; 0 outside.

    Raises:
        ValueError: for fewer than 2 classes or an image without foreground.
    """
    inside = image > foreground
    if classes < 2 or not bool(inside.any()):
        raise ValueError(f"need classes >= 2 and a foreground above {foreground}; got {classes} classes.")
    edges = torch.quantile(image[inside].float(), torch.linspace(0, 1, classes + 1)[1:-1])
    label = torch.where(inside, 1 + torch.bucketize(image, edges), torch.zeros_like(image, dtype=torch.int64))
    paint = RandSynthAppearance(components=1, max_std=0.02, corruption_prob=0.0).set_random_state(seed)
    painted = paint(label.reshape(1, *image.shape[-3:])).as_tensor().reshape(image.shape)
    return torch.where(inside, painted, torch.zeros_like(painted))


CROSS_CONTRASTS = {"t2": "t2_like", "synth": "synthetic"}  # pair-name suffix -> the moving image's contrast


def benchmark_pairs() -> list[dict]:
    """The registration benchmark: three same-contrast pairs, the :func:`default_pairs` and ``icbm2009c_to_colin27``
    (the ICBM 2009c asymmetric template, HCPEx areas merged to the same lobes, onto Colin27), and the same three with
    the moving image re-painted across contrasts, by :func:`t2_like` (``colin27_deformed_t2``,
    ``mni152_t2_to_colin27``, ``icbm2009c_t2_to_colin27``) and by the synthetic appearance model
    (:func:`synthetic_contrast`, seeded: ``colin27_deformed_synth``, ``mni152_synth_to_colin27``,
    ``icbm2009c_synth_to_colin27``). ``colin27_deformed*`` have a known ground truth; the others are other
    templates labelled by other atlases."""
    same = default_pairs()
    same.append({"name": "icbm2009c_to_colin27", "fixed": same[0]["fixed"], "moving": labelled_case("icbm2009c_hcpex")})
    crossed = []
    for suffix, contrast in CROSS_CONTRASTS.items():
        for pair in same:
            base, _, fixed_name = pair["name"].partition("_to_")
            name = f"{base}_{suffix}_to_{fixed_name}" if fixed_name else f"{base}_{suffix}"
            crossed.append({"name": name, "fixed": pair["fixed"], "moving": {**pair["moving"], "contrast": contrast}})
    return same + crossed


def file_pair(
    fixed_image: str | os.PathLike,
    moving_image: str | os.PathLike,
    fixed_label: str | os.PathLike = "",
    moving_label: str | os.PathLike = "",
    name: str = "",
) -> dict:
    """A pair of your own NIfTI files (any orientation and spacing; intensities are rescaled to [0, 1] by
    percentiles). With label maps for both, Dice of their labels before and after is reported; label values are
    used as they are, and the two maps must share their meaning.

    Raises:
        FileNotFoundError: naming a file that does not exist.
        ValueError: when only one of the two label maps is given.
    """
    if bool(fixed_label) != bool(moving_label):
        raise ValueError("Give label maps for both images (fixed_label and moving_label) or for neither.")
    for path in (fixed_image, moving_image, fixed_label, moving_label):
        if path and not Path(path).is_file():
            raise FileNotFoundError(f"Registration input {path} does not exist.")

    def item(image: str | os.PathLike, label: str | os.PathLike) -> dict:
        entry = {"source": "file", "image": str(image), "name": Path(image).name}
        return {**entry, "label": str(label), "resample": "nearest"} if label else entry

    stems = [Path(path).name.split(".")[0] for path in (moving_image, fixed_image)]
    return {
        "name": name or "_to_".join(stems),
        "fixed": item(fixed_image, fixed_label),
        "moving": item(moving_image, moving_label),
    }


def load_pair(
    pair: dict,
    spacing_mm: float = 2.0,
    multiple: int = 8,
    contract: str | os.PathLike | torch.nn.Module | Mapping | None = None,
) -> dict[str, torch.Tensor | None]:
    """Fixed and moving image (and labels, when the pair has them) on the fixed grid, resampled to ``spacing_mm``
    and padded to a multiple of ``multiple``. Packaged pairs get their coarse labels; a moving copy (``copy_seed``)
    is deformed after resampling; a moving item with ``"contrast": "t2_like"`` is re-painted by :func:`t2_like`,
    one with ``"contrast": "synthetic"`` by :func:`synthetic_contrast` (seed ``"contrast_seed"``, default 3).
    ``fixed_label``/``moving_label`` are None for a pair without labels.

    Images are read (RAS) and scaled by the intensity rule of ``contract``: the encoder that will see them (an
    export's folder, a loaded encoder or its record), whose preprocessing contract
    (:func:`~monai_slicenav.encoders.input_contract`) says how it was trained; None: the package's rule.

    Raises:
        ValueError: for a contract whose intensities are not [0, 1], clipped (what the registration losses assume).
    """
    rule = input_contract(contract)["intensity"]
    if [float(v) for v in rule["range"]] != [0.0, 1.0] or not rule.get("clip", True):
        raise ValueError(f"registration scales images to [0, 1], clipped; the encoder's contract asks for {rule}.")
    labelled = "label" in pair["fixed"]
    keys = ("image", "label") if labelled else ("image",)
    modes = ("bilinear", "nearest")[: len(keys)]
    # outside the Compose: a refused file keeps its own error, not MONAI's wrapper
    read = EmbeddedVolumed(percentiles=rule["percentiles"])
    prepare = Compose(
        [
            *([CoarseLabelsd()] if "pair" in pair["fixed"] else []),
            Spacingd(keys, spacing_mm, mode=modes),
            SpatialPadd(keys, spatial_size=(multiple, multiple, multiple), method="end"),
        ]
    )
    fixed = prepare(read(pair["fixed"]))
    moving = prepare(read(pair["moving"]))
    moving = ResampleToMatchd(keys, "image_fixed", mode=modes)({**moving, "image_fixed": fixed["image"]})
    if labelled:
        moving = DeformedCopyd(magnitude_range=pair["moving"].get("copy_magnitude", (60.0, 120.0)))(moving)
    contrast = pair["moving"].get("contrast")
    if contrast == "t2_like":
        moving["image"] = t2_like(moving["image"])
    elif contrast == "synthetic":
        moving["image"] = synthetic_contrast(moving["image"], int(pair["moving"].get("contrast_seed", 3)))
    elif contrast is not None:
        raise ValueError(f"unknown contrast {contrast!r} of pair {pair['name']}: expected one of t2_like, synthetic.")
    shape = fixed["image"].shape[1:]
    padded = [-(-s // multiple) * multiple for s in shape]
    pad = SpatialPadd(keys, padded, method="end")
    fixed, moving = pad(fixed), pad(moving)
    return {
        "fixed_image": fixed["image"][None].float(),
        "fixed_label": fixed["label"][None].round().to(torch.int64) if labelled else None,
        "moving_image": moving["image"][None].float(),
        "moving_label": moving["label"][None].round().to(torch.int64) if labelled else None,
        "affine": fixed["image"].affine,
    }


def run_registration(
    pair: dict,
    out_dir: str | os.PathLike,
    similarity: str = "features",
    encoder_path: str | os.PathLike = "",
    spacing_mm: float = 2.0,
    config: RegistrationConfig | None = None,
) -> dict:
    """Register one pair and write its outputs under ``<out_dir>/<pair name>/<similarity>/``.

    Returns:
        the record written to ``registration.json``: Dice per class before and after, mean Dice, negative-Jacobian
        fraction inside the fixed foreground, wall time, settings.

    Raises:
        ValueError: when a similarity of :data:`FEATURE_SIMILARITIES` has no ``encoder_path``, or label maps hold
            no label.
    """
    config = config or RegistrationConfig()
    uses_encoder = similarity in FEATURE_SIMILARITIES
    if uses_encoder and not encoder_path:
        raise ValueError(f"Registration with similarity {similarity!r} needs an exported encoder (encoder_path).")
    encoder = load_encoder(encoder_path) if uses_encoder else None
    data = load_pair(pair, spacing_mm, contract=encoder)  # read as the encoder was trained (its contract)
    if data["fixed_label"] is not None:  # checked before the optimisation, not after it
        classes = _label_classes(pair, data["moving_label"], data["fixed_label"])
    start = time.perf_counter()
    levels = len(config.iterations)
    intensities = [intensity_levels(data[f"{role}_image"], levels) for role in ("fixed", "moving")]
    if uses_encoder:
        lifted = Lift3D(encoder, context=config.context, context_stride=config.context_stride).eval()
        fixed_levels = feature_levels(lifted, data["fixed_image"], levels)
        moving_levels = feature_levels(lifted, data["moving_image"], levels)
    else:
        fixed_levels, moving_levels = intensities
    ddf = register(fixed_levels, moving_levels, data["fixed_image"].shape[2:], similarity, config, *intensities)
    seconds = time.perf_counter() - start
    warped_image = warp_volume(data["moving_image"], ddf)
    record = {
        "pair": pair["name"],
        "similarity": similarity,
        "encoder": str(encoder_path) if uses_encoder else None,  # intensity and MI runs use none
        "negative_jacobian_fraction": negative_jacobian_fraction(ddf, data["fixed_image"] > 0.05),
        "seconds": round(seconds, 2),
        "spacing_mm": spacing_mm,
        "config": asdict(config),
        "displacement_units": "voxels of the fixed grid (MONAI Warp convention), in ddf.nii.gz as (X, Y, Z, 1, 3)",
    }
    warped_label = None
    if data["fixed_label"] is not None:
        warped_label = warp_volume(data["moving_label"], ddf, mode="nearest")
        record.update(_dice_record(classes, data["moving_label"], warped_label, data["fixed_label"]))
    target = Path(out_dir) / pair["name"] / similarity
    write_registration(target, data["affine"].numpy(), warped_image, warped_label, ddf, record)
    logger.info(
        "%s / %s: mean Dice %s -> %s in %.1f s",
        pair["name"],
        similarity,
        record.get("mean_dice_before", "n/a"),
        record.get("mean_dice_after", "n/a"),
        seconds,
    )
    return record


def _label_classes(pair: dict, moving: torch.Tensor, fixed: torch.Tensor) -> tuple[list[str], torch.Tensor | None]:
    """Class names (background first) and, for label maps of your own, their sorted non-zero values: the coarse
    lobes of packaged pairs, else every non-zero value present in either map.

    Raises:
        ValueError: when the maps hold no label other than 0.
    """
    if "pair" in pair["fixed"]:
        return coarse_label_names(), None
    values = torch.unique(torch.cat([moving.flatten(), fixed.flatten()]))
    values = values[values != 0]
    if values.numel() == 0:
        raise ValueError(f"{pair['name']}: the label maps hold no label other than 0 (background).")
    return ["background", *(str(int(v)) for v in values)], values


def _dice_record(
    classes: tuple[list[str], torch.Tensor | None], moving: torch.Tensor, warped: torch.Tensor, fixed: torch.Tensor
) -> dict:
    """Dice per class before and after; label values of your own are renumbered 1..K first, so sparse values such
    as 2035 cost no more than dense ones in the one-hot."""
    names, values = classes
    if values is not None:
        moving, warped, fixed = (
            torch.where(x == 0, 0, torch.searchsorted(values, x) + 1) for x in (moving, warped, fixed)
        )
    before = label_dice(moving, fixed, len(names))
    after = label_dice(warped, fixed, len(names))
    return {
        "dice_before": before,
        "dice_after": after,
        "mean_dice_before": sum(before) / len(before),
        "mean_dice_after": sum(after) / len(after),
        "classes": names[1:],
    }


def compare_similarities(
    out_dir: str | os.PathLike,
    encoder_path: str | os.PathLike = "",
    spacing_mm: float = 2.0,
    config: RegistrationConfig | None = None,
    pairs: list[dict] | None = None,
) -> list[dict]:
    """Register every pair with intensities and, when an encoder is given, with its features; write
    ``comparison.json`` (all records) and ``comparison.csv`` (pair, similarity, mean Dice before/after,
    negative-Jacobian fraction, seconds) under ``out_dir``."""
    similarities = ["intensity"] + (["features"] if encoder_path else [])
    records = [
        run_registration(pair, out_dir, similarity, encoder_path, spacing_mm, config)
        for pair in (pairs if pairs is not None else default_pairs())
        for similarity in similarities
    ]
    fields = ["pair", "similarity", "mean_dice_before", "mean_dice_after", "negative_jacobian_fraction", "seconds"]
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(records)
    atomic_write_json(Path(out_dir) / "comparison.json", records)
    atomic_write_files({Path(out_dir) / "comparison.csv": table.getvalue().encode()})
    return records
