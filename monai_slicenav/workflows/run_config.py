"""The hyper-parameters of a bundle run, read from the config the run parsed (overrides included), so that no bundle
keeps a hand-written list of them: ``models/training.json`` records them and ``slicenav pack`` stacks them last as
``configs/trained.yaml`` to reproduce the training.

``python -m monai.bundle run`` gives a config's expressions no handle on the parser that evaluates them, so
:func:`bundle_hyperparameters` finds it on the call stack: the :class:`~monai.bundle.ConfigParser` whose
``get_parsed_content`` is evaluating the calling ``$`` expression. The same pattern as nanoGPT's ``config_keys``
(every plain module-level setting of the running script), applied to the running bundle config.
"""

from __future__ import annotations

import sys
from typing import Any

from monai.bundle import ConfigParser

__all__ = ["WIRING_KEYS", "bundle_hyperparameters", "is_plain"]

# top-level keys that wire a run to its machine or its files, not settings of the training it reproduces
WIRING_KEYS = frozenset({"bundle_root", "rank", "resume", "imports", "setup", "export_navigation"})
_REFERENCE_PREFIXES = ("$", "@", "%")  # MONAI's expression, reference and macro markers


def is_plain(value: Any) -> bool:
    """Whether ``value`` is plain data (numbers, strings, booleans, None and lists of them) with no MONAI
    expression, reference or macro in it: a hyper-parameter as written, not a component or a wire."""
    if isinstance(value, str):
        return not value.startswith(_REFERENCE_PREFIXES)
    if isinstance(value, (list, tuple)):
        return all(is_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float))


def _running_parser() -> ConfigParser:
    frame = sys._getframe(1)
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, ConfigParser):
            return candidate
        frame = frame.f_back
    raise RuntimeError(
        "bundle_hyperparameters() reads the config that is being parsed: call it from a '$' expression of a bundle "
        "config, or pass the ConfigParser."
    )


def bundle_hyperparameters(parser: ConfigParser | None = None) -> dict[str, Any]:
    """Every hyper-parameter of a bundle run as it is used, overrides included: the top-level keys of the parsed
    config whose value is plain data, and those set by a ``$`` expression that references nothing else in the
    config (``$monai_slicenav.transforms.NAVIGATION_REGIME.max_translation``) and evaluates to plain data. Keys that
    reference other keys (``'$@rank == 0'``) are derived and recomputed from the recorded ones; components
    (mappings) and :data:`WIRING_KEYS` are left out.

    Args:
        parser: the run's parser; None: the one evaluating the ``$`` expression that calls this function.

    Raises:
        RuntimeError: without ``parser``, when not called while a bundle config is being parsed.
    """
    parser = parser if parser is not None else _running_parser()
    recorded: dict[str, Any] = {}
    for key, raw in parser.get().items():
        if key in WIRING_KEYS or (isinstance(raw, str) and bundle_hyperparameters.__name__ in raw):
            continue  # (a key that records the hyper-parameters is not one)
        if is_plain(raw):
            recorded[key] = raw
        elif isinstance(raw, str) and raw.startswith("$") and "@" not in raw:
            value = parser.get_parsed_content(key)
            if is_plain(value):
                recorded[key] = value
    return recorded
