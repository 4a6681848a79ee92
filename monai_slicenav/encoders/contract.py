"""The preprocessing contract of an exported encoder: what its training inputs looked like (orientation, voxel size
where one was fixed, the intensity rule), as MONAI transforms for a user's own pipeline, and a check that warns
once when the volumes a lifted encoder receives do not look like that.

Every export records its contract under ``input.contract`` of ``encoder.json`` (since 0.8.0); an older export gets
the package's one rule, which every release has trained with (RAS, [0, 1] by the 0.5th-99.5th percentiles)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import torch
from monai.data import MetaTensor
from monai.data.utils import affine_to_spacing
from monai.transforms import Compose, Orientationd, ScaleIntensityRangePercentilesd, Spacingd

from ..volume import INTENSITY_PERCENTILES
from .record import read_record

__all__ = ["training_contract", "input_contract", "preprocessing", "InputCheck"]

logger = logging.getLogger(__name__)

_RANGE_SLACK = 0.05  # inputs within [lo - slack, hi + slack] of the trained range pass the check
_SPACING_SLACK = 0.25  # relative difference of voxel sizes that passes the check


def training_contract(spacing_mm: float | None = None) -> dict:
    """The contract pretraining writes into every export: RAS orientation, ``spacing_mm`` (isotropic, when the
    scans were resampled to it; None: each scan's own grid) and the intensity rule of
    :func:`~monai_slicenav.volume.scale_intensity`."""
    return {
        "orientation": "RAS",
        "spacing_mm": None if spacing_mm is None else float(spacing_mm),
        "intensity": {"percentiles": list(INTENSITY_PERCENTILES), "range": [0.0, 1.0], "clip": True},
    }


def input_contract(source: str | os.PathLike | torch.nn.Module | Mapping | None) -> dict:
    """The contract of an export (its folder or either file), of an encoder loaded by
    :func:`~monai_slicenav.encoders.load_encoder` (it carries its record's ``input``), or of an ``encoder.json``
    record; exports written before 0.8.0, and None (no encoder: a network trained from scratch), get
    :func:`training_contract`'s rule."""
    if source is None:
        return training_contract()
    if isinstance(source, torch.nn.Module):
        spec = getattr(source, "input_spec", {})
    elif isinstance(source, Mapping):
        spec = source.get("input", {})
    else:
        spec = read_record(source).get("input", {})
    contract = spec.get("contract") if isinstance(spec, Mapping) else None
    return dict(contract) if isinstance(contract, Mapping) else training_contract()


def preprocessing(
    source: str | os.PathLike | torch.nn.Module | Mapping | None,
    keys: Sequence[str] | str = ("image",),
    label_keys: Sequence[str] | str = (),
) -> Compose:
    """MONAI transforms that bring channel-first volumes (after ``LoadImaged`` + ``EnsureChannelFirstd``) to what
    the encoder of ``source`` was trained on: ``Orientationd`` to its orientation, ``Spacingd`` to its voxel size
    where one was recorded (bilinear for ``keys``, nearest for ``label_keys``), and its intensity rule on ``keys``
    (``ScaleIntensityRangePercentilesd``: the recorded percentiles to the recorded range, clipped).

    Example::

        chain = Compose([LoadImaged(["image", "label"]), EnsureChannelFirstd(["image", "label"]),
                         *preprocessing("runs/aligned/encoder", "image", "label").transforms])
    """
    keys, label_keys = _as_list(keys), _as_list(label_keys)
    contract = input_contract(source)
    every = keys + label_keys
    chain: list = [Orientationd(every, axcodes=contract["orientation"], labels=None)]
    if contract.get("spacing_mm"):
        modes = ["bilinear"] * len(keys) + ["nearest"] * len(label_keys)
        chain.append(Spacingd(every, pixdim=float(contract["spacing_mm"]), mode=modes))
    rule = contract["intensity"]
    (lower, upper), (low, high) = rule["percentiles"], rule["range"]
    chain.append(ScaleIntensityRangePercentilesd(keys, lower, upper, low, high, clip=bool(rule.get("clip", True))))
    return Compose(chain)


def _as_list(keys: Sequence[str] | str) -> list[str]:
    return [keys] if isinstance(keys, str) else list(keys)


class InputCheck:
    """Compare the first volumes a lifted encoder receives with its contract and log one warning naming what
    differs (intensities outside the trained range; voxel sizes, when the input is a MetaTensor and the contract
    fixes one); then stay silent.

    Args:
        contract: the encoder's contract (:func:`input_contract`).
        name: how the warning names the consumer, e.g. ``"Lift3D"``.
    """

    def __init__(self, contract: Mapping, name: str) -> None:
        self.contract, self.name, self.done = dict(contract), name, False

    def differences(self, x: torch.Tensor) -> list[str]:
        """What about ``x`` (B, C, X, Y, Z) differs from the contract, as phrases (empty: nothing)."""
        found = []
        low, high = self.contract["intensity"]["range"]
        values = x.detach().float()
        lo, hi = float(values.min()), float(values.max())
        slack = _RANGE_SLACK * (high - low)
        if lo < low - slack or hi > high + slack:
            found.append(f"intensities span [{lo:.3g}, {hi:.3g}], trained on [{low:g}, {high:g}]")
        spacing = self.contract.get("spacing_mm")
        if spacing and isinstance(x, MetaTensor):
            affine = x.affine[0] if x.affine.ndim == 3 else x.affine
            sizes = [float(s) for s in affine_to_spacing(affine, r=3)]
            if any(abs(s - spacing) > _SPACING_SLACK * spacing for s in sizes):
                found.append(f"voxels of {'x'.join(f'{s:.3g}' for s in sizes)} mm, trained on {spacing:g} mm")
        return found

    def __call__(self, x: torch.Tensor) -> None:
        if self.done:
            return
        self.done = True
        found = self.differences(x)
        if found:
            logger.warning(
                "%s: the input differs from what the encoder was trained on: %s; build the input chain with "
                "monai_slicenav.export.preprocessing(<encoder>) (warned once).",
                self.name,
                "; ".join(found),
            )
