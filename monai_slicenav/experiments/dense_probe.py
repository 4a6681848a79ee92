"""The frozen-feature dense probe: does an encoder's lifted 3D feature map tell the lobes apart, voxel by voxel?

A linear (1x1x1) voxel classifier (closed-form ridge regression onto one-hot classes, features standardised on the
training voxels) on the frozen features of :class:`~monai_slicenav.downstream.lift3d.Lift3D` (every pyramid level
upsampled trilinearly to the label grid and concatenated), fitted on one real head and scored on another whose labels
mean the same thing: the Harvard-Oxford cortical atlas merged into five lobes (``CoarseLabelsd``) on the MNI152 1 mm
template (fitted) and, in the same MNI world space, on the ICBM 2009c template (scored). One labelling scheme on both
sides, so the score measures the features, not the disagreement of two atlases; no training loop and no random
draws (voxels are subsampled on a fixed lattice), so the score is a function of the encoder alone and its spread over
seeds is the pretraining's. Per-class and mean Dice are reported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from monai.transforms import Compose, Spacingd
from torch import nn

from ..data.labelled import labelled_case
from ..downstream.lift3d import Lift3D
from ..transforms import CoarseLabelsd, EmbeddedVolumed
from .probes import ridge_fit

__all__ = ["DENSE_PROBE_CASES", "dense_probe_cases", "lifted_features", "dense_probe"]

DENSE_PROBE_CASES = ("mni152_harvard_oxford", "icbm2009c_harvard_oxford")  # fitted on the first, scored on the second
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


def _voxels(features: torch.Tensor, label: torch.Tensor, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature rows (N, F) and classes (N,) of the labelled voxels (lobes 1..5) on a fixed lattice of ``stride``."""
    lattice = (slice(None), *(slice(0, None, stride),) * 3)
    classes = label[0][lattice[1:]].round().long().flatten()
    rows = features[lattice].flatten(1).T
    inside = classes > 0
    return rows[inside], classes[inside]


def dense_probe(
    encoder: nn.Module,
    cases: Sequence[Mapping] | None = None,
    spacing_mm: float = 3.0,
    context: str = "none",
    context_stride: int = 1,
    stride: int = 2,
    alpha: float = 10.0,
) -> dict[str, float]:
    """The dense probe of ``encoder`` (see the module docstring): fitted on ``cases[0]``, scored on ``cases[1]``
    (default: :func:`dense_probe_cases`), with ``context`` and ``context_stride`` for a context encoder (as in
    :class:`Lift3D`); training voxels on a lattice of ``stride``.

    Returns:
        ``dense_dice`` (mean over the five lobes, inside the labelled voxels of the scored case) and
        ``dense_dice_<k>`` per lobe k.
    """
    cases = cases if cases is not None else dense_probe_cases(spacing_mm)
    lift = Lift3D(encoder, context=context, context_stride=context_stride).eval()
    fit_case, test_case = cases
    rows, classes = _voxels(lifted_features(lift, fit_case["image"]), fit_case["label"], stride)
    targets = nn.functional.one_hot(classes - 1, _LOBES).float()
    predict = ridge_fit(rows, targets, alpha)
    test_rows, truth = _voxels(lifted_features(lift, test_case["image"]), test_case["label"], 1)
    predicted = predict(test_rows).argmax(dim=1) + 1
    scores = {}
    for lobe in range(1, _LOBES + 1):
        hit, want, got = ((predicted == lobe) & (truth == lobe)).sum(), (truth == lobe).sum(), (predicted == lobe).sum()
        scores[f"dense_dice_{lobe}"] = float(2 * hit / (want + got).clamp(min=1))
    return {"dense_dice": sum(scores.values()) / _LOBES, **scores}
