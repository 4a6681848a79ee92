"""``KEY=VALUE`` command-line overrides of the bench scripts (``--regime``, ``--dynamics_overrides``)."""

from __future__ import annotations

import argparse

import yaml


def override(text: str) -> tuple[str, object]:
    """One ``KEY=VALUE`` argument as ``(key, value)``, the value read as YAML (``3`` an int, ``[1, 2]`` a list).

    Raises:
        argparse.ArgumentTypeError: for text without ``=`` or without a key (argparse prints it and exits 2).
    """
    key, equals, value = text.partition("=")
    if not equals or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, yaml.safe_load(value)
