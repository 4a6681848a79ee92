"""The model zoo's own checks of a bundle, run on a bundle folder or on a ``slicenav pack`` archive: the files a
bundle needs, its version recorded in its changelog, every file over 25 MB listed in ``large_files.yml`` (and left
out of an archive), a data licence note where the recorded training data carries a licence, and, given the schema
file, ``monai.bundle.verify_metadata``. What Project-MONAI/model-zoo's ``ci/verify_bundle.py`` checks, plus its
large-file rule, without a network connection."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import yaml

from .pack import DATA_LICENSE, LARGE_FILE_BYTES, training_data_licences

__all__ = ["REQUIRED_FILES", "zoo_problems"]

REQUIRED_FILES = ("configs/metadata.json", "docs/README.md", "LICENSE")
_LARGE_FILE_LISTS = ("large_files.yml", "large_files.yaml", "large_files.json")


def zoo_problems(path: str | os.PathLike, schema: str | os.PathLike | None = None) -> list[str]:
    """What keeps the bundle at ``path`` (a folder, or a ``NAME.zip`` holding ``NAME/``) from the model zoo, one
    line each; empty when it passes. ``schema``: a local copy of the metadata schema its ``metadata.json`` names,
    to run ``monai.bundle.verify_metadata`` offline (skipped when None)."""
    path = Path(path)
    if path.suffix == ".zip":
        return _archive_problems(path, schema)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no bundle folder or .zip archive there.")
    return _folder_problems(path, schema, archived=False)


def _archive_problems(archive: Path, schema: str | os.PathLike | None) -> list[str]:
    with zipfile.ZipFile(archive) as opened, tempfile.TemporaryDirectory() as temp:
        tops = {name.split("/", 1)[0] for name in opened.namelist()}
        if len(tops) != 1 or tops != {archive.stem}:
            return [f"{archive.name}: must hold one folder named {archive.stem}/, holds {sorted(tops)}"]
        if any(name.startswith("/") or ".." in name.split("/") for name in opened.namelist()):
            return [f"{archive.name}: member paths leave the archive's folder"]
        opened.extractall(temp)
        return [f"{archive.name}: {line}" for line in _folder_problems(Path(temp) / archive.stem, schema, True)]


def _folder_problems(bundle: Path, schema: str | os.PathLike | None, archived: bool) -> list[str]:
    problems = [f"{name} is missing" for name in REQUIRED_FILES if not (bundle / name).is_file()]
    if not any((bundle / "configs" / f"inference.{ext}").is_file() for ext in ("json", "yaml", "yml")):
        problems.append("configs/inference.json (or .yaml) is missing: the zoo's checks build the network from it")
    meta_path = bundle / "configs" / "metadata.json"
    if meta_path.is_file():
        problems += _metadata_problems(meta_path, schema)
    problems += _large_file_problems(bundle, archived)
    if training_data_licences(bundle) and not (bundle / DATA_LICENSE).is_file():
        problems.append(f"{DATA_LICENSE} is missing: the recorded training data carries a licence")
    return problems


def _metadata_problems(meta_path: Path, schema: str | os.PathLike | None) -> list[str]:
    try:
        meta = json.loads(meta_path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        return [f"configs/metadata.json is not valid JSON ({err})"]
    version, changelog = meta.get("version"), meta.get("changelog")
    problems = []
    if not isinstance(changelog, dict) or version not in changelog:
        problems.append(f"configs/metadata.json: version {version!r} is not in its changelog")
    if schema is not None:
        from monai.bundle import verify_metadata

        try:
            verify_metadata(meta_file=str(meta_path), filepath=str(schema))
        except Exception as err:  # jsonschema's ValidationError and MONAI's wrappers: the message is the finding
            problems.append(f"configs/metadata.json does not match its schema: {str(err).splitlines()[0]}")
    return problems


def _large_file_problems(bundle: Path, archived: bool) -> list[str]:
    listed = set()
    for name in _LARGE_FILE_LISTS:
        if (bundle / name).is_file():
            loaded = yaml.safe_load((bundle / name).read_text()) or {}
            listed |= {str(entry.get("path", "")).removeprefix("./") for entry in loaded.get("large_files", [])}
    problems = []
    for file in sorted(p for p in bundle.rglob("*") if p.is_file() and p.stat().st_size > LARGE_FILE_BYTES):
        member = file.relative_to(bundle).as_posix()
        size = f"{file.stat().st_size / 2**20:.0f} MB"
        if archived:
            problems.append(f"{member} ({size}) is stored in the archive: over 25 MB, list it in large_files.yml")
        elif member not in listed and not member.startswith(("models/checkpoint", "eval/", "data/")):
            problems.append(f"{member} ({size}) is over 25 MB and not listed in large_files.yml")
    return problems
