"""Loading weights from untrusted files: plain state dicts only (``weights_only=True``), wrapper prefixes stripped,
missing, unexpected and mis-shaped keys named."""

from __future__ import annotations

import logging
import os
import pickle
import re
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

__all__ = ["non_finite_keys", "load_state_dict", "load_into", "strip_prefixes"]

logger = logging.getLogger(__name__)

_PREFIXES = ("module.", "_orig_mod.")


def strip_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` (DDP/DataParallel) and ``_orig_mod.`` (``torch.compile``) prefixes of state-dict keys,
    however they nest (torch's ``consume_prefix_in_state_dict_if_present`` strips one prefix per call)."""
    cleaned = OrderedDict(state)
    while any(key.startswith(_PREFIXES) for key in cleaned):
        for prefix in _PREFIXES:
            consume_prefix_in_state_dict_if_present(cleaned, prefix)
    return dict(cleaned)


def non_finite_keys(state: Mapping[str, torch.Tensor]) -> list[str]:
    """The names of the floating-point tensors of ``state`` that hold NaN or Inf."""
    return [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def load_state_dict(path: str | os.PathLike, map_location: str = "cpu") -> dict[str, torch.Tensor]:
    """Load a plain state dict safely (``weights_only=True``), prefixes stripped.

    Raises:
        FileNotFoundError: when the file is missing.
        ValueError: when it is unreadable, holds pickled objects, is not a flat mapping of names to tensors, or holds
            NaN/Inf values.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file.")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch words this "Unsupported global: GLOBAL x" or "unsupported GLOBAL x" depending on the path
        named = re.search(r"unsupported global\W+(?:global\s+)?([\w.]+)", str(err), flags=re.IGNORECASE)
        if named or "global" in str(err).lower():
            what = f" (it names {named.group(1)})" if named else ""
            raise ValueError(
                f"{path}: refused, the file holds pickled Python objects{what}, not a plain state dict of tensors; "
                "loading it could run arbitrary code, so it is not loaded."
            ) from err
        raise ValueError(f"{path}: not a readable torch checkpoint ({str(err).splitlines()[-1]}).") from err
    except (RuntimeError, EOFError, OSError) as err:
        raise ValueError(f"{path}: not a readable torch checkpoint ({type(err).__name__}: {err}).") from err
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a flat mapping of parameter names to tensors, got {type(state).__name__}.")
    broken = non_finite_keys(state)
    if broken:
        raise ValueError(
            f"{path}: non-finite values (NaN/Inf) in {len(broken)} tensors, e.g. {broken[:3]}: the run that wrote it "
            "diverged; refusing to load it."
        )
    return strip_prefixes(state)


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], strict: bool, source: str) -> dict[str, list[str]]:
    """Load ``state`` into ``model`` after checking it: mismatched shapes always raise, missing or unexpected keys
    raise when ``strict`` (else they are logged); every problem names the keys and ``source``.

    Returns:
        ``{"loaded": [...], "missing": [...], "unexpected": [...]}`` key names, sorted.
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if mismatched:
        details = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}" for k in mismatched]
        raise ValueError(f"{source}: parameter shapes differ: {details}.")
    if missing or unexpected:
        message = f"{source}: missing keys {missing}; unexpected keys {unexpected}."
        if strict:
            raise ValueError(message + " Pass strict=False to load the matching keys only.")
        logger.warning(message)
    model.load_state_dict(state, strict=False)
    return {"loaded": sorted(set(state) & set(expected)), "missing": missing, "unexpected": unexpected}
