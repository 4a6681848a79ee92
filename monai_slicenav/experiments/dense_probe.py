"""The frozen-feature dense probe: does an encoder's lifted 3D feature map tell the lobes apart, voxel by voxel?

A linear (1x1x1) voxel classifier (closed-form ridge regression onto one-hot classes, features standardised on the
training voxels) on the frozen features of :class:`~monai_slicenav.downstream.lift3d.Lift3D` (every pyramid level
upsampled trilinearly to the label grid and concatenated). Two real heads whose labels mean the same thing: the
Harvard-Oxford cortical atlas merged into five lobes (``CoarseLabelsd``) on the MNI152 1 mm template and, in the same
MNI world space, on the ICBM 2009c template. One labelling scheme on both sides, so the score measures the features,
not the disagreement of two atlases.

The probe is fitted on each head and scored on the other, and the two Dice scores are averaged (one direction alone
moves with the pretraining seed about twice as much). The ridge penalty is fixed (:data:`DENSE_PENALTY`): the value a
hemisphere split of the fitted head (fit on one hemisphere, score on the other, over :data:`PENALTIES`) picks most
often across the encoders of the `small` comparison; chosen per encoder (``penalty=None``), it moved with the seed
and doubled the spread. No training loop and no random draws (voxels on a fixed lattice): the score is a function of the
encoder alone and its spread over seeds is the pretraining's. Per-class and mean Dice are reported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import torch
from monai.transforms import Compose, Spacingd
from torch import nn

from ..data.labelled import labelled_case
from ..downstream.lift3d import Lift3D
from ..encoders.record import read_record
from ..transforms import CoarseLabelsd, EmbeddedVolumed
from .probes import ridge_fit

__all__ = [
    "DENSE_PENALTY",
    "DENSE_PROBE_CASES",
    "PENALTIES",
    "PIXEL_KERNELS",
    "PROBE_ACTIONS",
    "dense_probe_cases",
    "lifted_features",
    "lobe_dice",
    "dense_probe",
    "pixel_features",
    "probe_features",
    "regime_stride",
]

DENSE_PROBE_CASES = ("mni152_harvard_oxford", "icbm2009c_harvard_oxford")  # each fitted, and scored on the other
PENALTIES = (1e1, 1e2, 1e3, 1e4, 1e5)  # the ridge penalties the hemisphere split chooses from
DENSE_PENALTY = 1e3  # the fixed ridge penalty (see the module docstring)
PROBE_ACTIONS = ("true", "still")  # the actions a context encoder is given between the slices it sees
_LOBES = 5


def dense_probe_cases(spacing_mm: float) -> list[dict]:
    """The two heads of the probe, loaded, labelled with the five Harvard-Oxford lobes and resampled to
    ``spacing_mm``: dicts with ``image`` (1, X, Y, Z) in [0, 1] and ``label`` (1, X, Y, Z), each a ``MetaTensor``.

    Raises:
        FileNotFoundError: when the templates are not installed (``pip install "monai_slicenav[data]"``, Debian
            ``mricron-data``).
    """
    atlas = labelled_case("mni152_harvard_oxford")
    icbm = labelled_case("icbm2009c_hcpex")  # its image; the labels are the same atlas's, in the same MNI space
    items = [atlas, {**atlas, "name": DENSE_PROBE_CASES[1], "image": icbm["image"], "resample": "nearest"}]
    chain = Compose(
        [EmbeddedVolumed(), CoarseLabelsd(), Spacingd(("image", "label"), spacing_mm, mode=("bilinear", "nearest"))]
    )
    return [chain(dict(item)) for item in items]


@torch.no_grad()
def lifted_features(lift: Lift3D, image: torch.Tensor) -> torch.Tensor:
    """Every pyramid level of ``lift`` for a volume (1, X, Y, Z), upsampled trilinearly to its grid and
    concatenated: (F, X, Y, Z)."""
    levels = lift(image[None])
    size = image.shape[1:]
    upsampled = [nn.functional.interpolate(level, size=size, mode="trilinear", align_corners=False) for level in levels]
    return torch.cat(upsampled, dim=1)[0]


PIXEL_KERNELS = (1, 3, 7, 15)  # in-plane averaging widths (voxels) of the pixel reference's features


def pixel_features(image: torch.Tensor, kernels: Sequence[int] = PIXEL_KERNELS, axis: int = 2) -> torch.Tensor:
    """The dense probe's pixel reference: raw-intensity features of a volume (1, X, Y, Z), seen as slices cut
    across ``axis`` as :class:`Lift3D` cuts them. For each odd width k of ``kernels``, the intensity averaged over
    k x k pixels in the slice, at the voxel and at its 8 in-plane neighbours k pixels away (zero outside): a
    multi-scale patch of the same slices, (9 * len(kernels), X, Y, Z)."""
    if any(k < 1 or k % 2 == 0 for k in kernels):
        raise ValueError(f"kernels must be odd widths >= 1, got {tuple(kernels)}.")
    planes = image.float().movedim(1 + axis, -1)[None]  # (1, 1, rows, cols, depth)
    rows, cols = planes.shape[2:4]
    maps = []
    for k in kernels:
        mean = nn.functional.avg_pool3d(planes, (k, k, 1), 1, (k // 2, k // 2, 0), count_include_pad=False)
        padded = nn.functional.pad(mean, (0, 0, k, k, k, k))
        maps += [padded[..., k + a : k + a + rows, k + b : k + b + cols, :] for a in (-k, 0, k) for b in (-k, 0, k)]
    return torch.cat(maps, dim=1)[0].movedim(-1, 1 + axis)


def _voxels(
    features: torch.Tensor, label: torch.Tensor, stride: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Feature rows (N, F), classes (N,) and first-axis indices (N,) of the labelled voxels (lobes 1..5) on a fixed
    lattice of ``stride``."""
    lattice = (slice(None), *(slice(0, None, stride),) * 3)
    classes = label[0][lattice[1:]].round().long()
    first_axis = torch.arange(0, label.shape[1], stride)[:, None, None].expand_as(classes).flatten()
    classes = classes.flatten()
    rows = features[lattice].flatten(1).T
    inside = classes > 0
    return rows[inside], classes[inside], first_axis[inside]


class _StillLift(Lift3D):
    """:class:`Lift3D` whose context encoder is told that its slices do not move (zero actions): the control for
    what the true actions add to the context."""

    def slice_action(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(super().slice_action(x))


def lobe_dice(predicted: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """Dice of each lobe k (``dense_dice_<k>``) and their mean (``dense_dice``) of predicted against true classes."""
    scores = {}
    for lobe in range(1, _LOBES + 1):
        hit, want, got = ((predicted == lobe) & (truth == lobe)).sum(), (truth == lobe).sum(), (predicted == lobe).sum()
        scores[f"dense_dice_{lobe}"] = float(2 * hit / (want + got).clamp(min=1))
    return {"dense_dice": sum(scores.values()) / _LOBES, **scores}


def _classifier(rows: torch.Tensor, classes: torch.Tensor, alpha: float):
    predict = ridge_fit(rows, nn.functional.one_hot(classes - 1, _LOBES).float(), alpha)
    return lambda new: predict(new).argmax(dim=1) + 1


def _penalty(rows: torch.Tensor, classes: torch.Tensor, first_axis: torch.Tensor, midline: float) -> float:
    """The ridge penalty of :data:`PENALTIES` whose classifier, fitted on one hemisphere of a head (the first axis
    is left-right in RAS) and scored on the other, has the best mean Dice over both ways."""
    left = first_axis < midline

    def split_dice(alpha: float) -> float:
        halves = ((left, ~left), (~left, left))
        return sum(lobe_dice(_classifier(rows[a], classes[a], alpha)(rows[b]), classes[b])["dense_dice"]
                   for a, b in halves)  # fmt: skip

    return max(PENALTIES, key=split_dice)


def regime_stride(export: str | os.PathLike, spacing_mm: float) -> int:
    """Slices per context step so that a step is the regime's: the ``max_translation`` the exported encoder
    recorded (``encoder.json``'s ``navigation``) over the voxel size, at least 1 (1 without a recorded regime).
    Measured best on the `small` dense probe: 4 at 3 mm for 12 mm steps, above 2 and 1 (docs/comparison.md)."""
    navigation = read_record(export).get("navigation") or {}
    return max(1, round(float(navigation.get("max_translation", spacing_mm)) / spacing_mm))


def dense_probe(
    encoder: nn.Module,
    cases: Sequence[Mapping] | None = None,
    spacing_mm: float = 3.0,
    context: str = "none",
    context_stride: int = 1,
    stride: int = 2,
    penalty: float | None = DENSE_PENALTY,
    actions: str = "true",
) -> dict[str, float]:
    """The dense probe of ``encoder`` (see the module docstring) on two ``cases`` (default: :func:`dense_probe_cases`):
    fitted on each and scored on the other, with ``context`` and ``context_stride`` for a context encoder (as in
    :class:`Lift3D`) and the ``actions`` it is given between the slices (``"true"``: the steps between them;
    ``"still"``: zero actions); training voxels on a lattice of ``stride``; a fixed ridge ``penalty``, or ``None``
    to choose one per way on the fitted head (hemisphere split over :data:`PENALTIES`).

    Returns:
        ``dense_dice`` and ``dense_dice_<k>`` per lobe k (the mean over the two ways; each way scores every labelled
        voxel of its scored head), ``dense_dice_ab`` and ``dense_dice_ba`` (the mean Dice of each way: fitted on the
        first case, fitted on the second) and ``dense_penalty_ab`` / ``dense_penalty_ba`` (the penalties used).

    Raises:
        ValueError: for unknown ``actions``, or a context the encoder cannot take (:class:`Lift3D`).
    """
    if actions not in PROBE_ACTIONS:
        raise ValueError(f"actions must be one of {PROBE_ACTIONS}, got {actions!r}.")
    cases = cases if cases is not None else dense_probe_cases(spacing_mm)
    lift = (Lift3D if actions == "true" else _StillLift)(encoder, context=context, context_stride=context_stride).eval()
    return probe_features([lifted_features(lift, case["image"]) for case in cases], cases, stride, penalty)


def probe_features(
    features: Sequence[torch.Tensor],
    cases: Sequence[Mapping],
    stride: int = 2,
    penalty: float | None = DENSE_PENALTY,
) -> dict[str, float]:
    """:func:`dense_probe` on given feature maps: one (F, X, Y, Z) per case, on the grid of its ``label``."""
    ways = {}
    for name, (fit, test) in (("ab", (0, 1)), ("ba", (1, 0))):
        rows, classes, first_axis = _voxels(features[fit], cases[fit]["label"], stride)
        midline = cases[fit]["label"].shape[1] / 2
        alpha = penalty if penalty is not None else _penalty(rows, classes, first_axis, midline)
        test_rows, truth, _ = _voxels(features[test], cases[test]["label"], 1)
        ways[name] = (alpha, lobe_dice(_classifier(rows, classes, alpha)(test_rows), truth))
    averaged = {key: sum(way[1][key] for way in ways.values()) / 2 for key in ways["ab"][1]}
    return {
        **averaged,
        **{f"dense_dice_{name}": way[1]["dense_dice"] for name, way in ways.items()},
        **{f"dense_penalty_{name}": way[0] for name, way in ways.items()},
    }
