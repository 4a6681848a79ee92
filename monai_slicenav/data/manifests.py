"""Public datasets a user downloads themselves: manifests -> MONAI datalists, and read-only integrity checks.

A manifest (``data_manifests/<name>.json``) states the homepage, licence, how to lay the files out, how cases are
found (``cases.glob`` + ``cases.id_regex`` relative to the root), the files of each case (``entries``), explicit files
with a sha256 where the provider publishes one, and a seeded default split. Splits are drawn per case from
``sha256(f"{seed}:{case_id}")``, so a case keeps its split whichever other cases are present.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from ..io import read_json_object
from .packaged import manifest_dir

__all__ = ["load_manifest", "case_split", "manifest_datalist", "Problem", "check_manifest", "sha256_of"]

_REQUIRED = ("name", "homepage", "licence", "cases", "entries", "split")


def load_manifest(manifest: str | os.PathLike) -> dict:
    """Load a manifest by path or by name (``"ixi"`` -> ``data_manifests/ixi.json``).

    Raises:
        FileNotFoundError: when neither exists.
        ValueError: when the JSON is invalid or required fields are missing (named).
    """
    path = Path(manifest)
    if not path.is_file():
        path = manifest_dir() / f"{manifest}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{manifest}: no such manifest file or name in {manifest_dir()}.")
    record = read_json_object(path)
    missing = [field for field in _REQUIRED if field not in record]
    if missing:
        raise ValueError(f"{path}: manifest lacks the fields {missing}.")
    _check_fields(record, str(path))
    return record


def _relative(pattern: object) -> bool:
    """A path or glob inside the dataset root: a relative string with no '..' part."""
    return (
        isinstance(pattern, str)
        and bool(pattern)
        and not Path(pattern).is_absolute()
        and ".." not in Path(pattern).parts
    )


def _check_fields(record: dict, source: str) -> None:
    """Refuse malformed fields before any file is searched, naming ``source`` and the field.

    Raises:
        ValueError: for a field of the wrong type, a glob or path outside the root, an invalid ``id_regex``, an
            entry template without ``{id}``, or split fractions that are not numbers summing to 1.
    """

    def fail(field: str, why: str) -> None:
        raise ValueError(f"{source}: field {field!r} {why}.")

    cases = record.get("cases")
    if not isinstance(cases, dict):
        fail("cases", "must be an object with 'glob' and 'id_regex'")
    if not _relative(cases.get("glob")):
        fail("cases.glob", "must be a relative pattern inside the dataset root (no absolute path, no '..')")
    try:
        re.compile(cases.get("id_regex", ""))
    except (re.error, TypeError) as err:
        fail("cases.id_regex", f"is not a valid regular expression ({err})")
    entries = record.get("entries")
    if not isinstance(entries, dict) or not entries:
        fail("entries", "must be a non-empty object of name -> path template")
    for name, template in entries.items():
        if not _relative(template) or "{id}" not in template:
            fail(f"entries.{name}", "must be a relative path template containing '{id}'")
    optional = record.get("optional_entries", [])
    if not isinstance(optional, list) or not set(optional) <= set(entries):
        fail("optional_entries", f"must be a list of entry names among {sorted(entries)}")
    files = record.get("files", [])
    if not isinstance(files, list) or not all(isinstance(f, dict) and _relative(f.get("path")) for f in files):
        fail("files", "must be a list of objects with a relative 'path' (and an optional 'sha256')")
    split = record.get("split")
    fractions = split.get("fractions") if isinstance(split, dict) else None
    if not isinstance(fractions, dict) or not all(isinstance(v, (int, float)) and v >= 0 for v in fractions.values()):
        fail("split.fractions", "must be an object of split name -> non-negative number")
    if abs(sum(fractions.values()) - 1.0) > 1e-6:
        fail("split.fractions", f"must sum to 1, got {sum(fractions.values()):g}")


def case_split(case_id: str, split: dict) -> str:
    """The split (``"train"``, ``"val"`` ...) of one case under a manifest's ``split`` record (seed, fractions)."""
    digest = hashlib.sha256(f"{split['seed']}:{case_id}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    edge = 0.0
    names = list(split["fractions"])
    for name in names:
        edge += split["fractions"][name]
        if position < edge:
            return name
    return names[-1]


def _case_ids(manifest: dict, root: Path) -> list[str]:
    pattern = re.compile(manifest["cases"]["id_regex"])
    ids = []
    for path in sorted(root.glob(manifest["cases"]["glob"])):
        match = pattern.match(path.relative_to(root).as_posix())
        if match:
            ids.append(match.group(1))
    return ids


def _as_record(manifest: str | os.PathLike | dict) -> dict:
    """A manifest given by path, name or as its record, its fields checked."""
    if not isinstance(manifest, dict):
        return load_manifest(manifest)
    _check_fields(manifest, f"manifest {manifest.get('name', '?')!r}")
    return manifest


def manifest_datalist(
    manifest: str | os.PathLike | dict, root: str | os.PathLike, split: str | None = None
) -> list[dict]:
    """MONAI datalist of the cases found under ``root``: one dict per case with a path per entry, ``case_id`` and
    ``split``; ``split`` keeps only that split.

    Raises:
        FileNotFoundError: when ``root`` does not exist, no case is found, or a required entry is missing (named).
    """
    record = _as_record(manifest)
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root}: no such folder (the root of {record['name']}; see its manifest's 'download')."
        )
    ids = _case_ids(record, root)
    if not ids:
        raise FileNotFoundError(f"{root}: no {record['name']} case matches {record['cases']['glob']!r}.")
    optional = set(record.get("optional_entries", []))
    items, missing = [], []
    for case_id in ids:
        item = {"case_id": case_id, "split": case_split(case_id, record["split"])}
        for key, template in record["entries"].items():
            path = root / template.format(id=case_id)
            if path.is_file():
                item[key] = str(path)
            elif key not in optional:
                missing.append(str(path))
        items.append(item)
    if missing:
        raise FileNotFoundError(f"{record['name']}: {len(missing)} required files are missing, e.g. {missing[:5]}.")
    return [item for item in items if split is None or item["split"] == split]


@dataclass(frozen=True)
class Problem:
    """One problem found by :func:`check_manifest`: the file (or root) and what is wrong."""

    path: str
    kind: str  # "missing" | "unreadable" | "checksum" | "count"
    detail: str


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _readable(path: Path) -> str | None:
    """None when a NIfTI reads completely; else why not (truncated data, bad header, bad gzip ...)."""
    try:
        np.asanyarray(nib.load(str(path)).dataobj)
    except Exception as err:  # nibabel, gzip and numpy raise many types for damaged files: all are "unreadable"
        return f"{type(err).__name__}: {err}"
    return None


def check_manifest(manifest: str | os.PathLike | dict, root: str | os.PathLike) -> tuple[list[Problem], int]:
    """Check the files of a dataset under ``root`` without modifying any: explicit files (presence, sha256 where
    stated), every case's entries (presence; NIfTI files must read completely) and the case count.

    Returns:
        the problems found and the number of files checked.
    """
    record = _as_record(manifest)
    root = Path(root)
    if not root.is_dir():
        return [Problem(str(root), "missing", "the dataset root does not exist")], 0
    problems, checked = [], 0
    for entry in record.get("files", []):
        path = root / entry["path"]
        checked += 1
        if not path.is_file():
            problems.append(Problem(str(path), "missing", "listed in the manifest"))
        elif entry.get("sha256") and sha256_of(path) != str(entry["sha256"]).lower():
            problems.append(Problem(str(path), "checksum", f"sha256 differs from {entry['sha256']}"))
    ids = _case_ids(record, root)
    expected = record["cases"].get("expected")
    if expected is not None and len(ids) != expected:
        problems.append(Problem(str(root), "count", f"found {len(ids)} cases, the manifest expects {expected}"))
    optional = set(record.get("optional_entries", []))
    for case_id in ids:
        for key, template in record["entries"].items():
            path = root / template.format(id=case_id)
            if not path.is_file():
                if key not in optional:
                    problems.append(Problem(str(path), "missing", f"entry {key!r} of case {case_id}"))
                continue
            checked += 1
            if path.name.endswith((".nii", ".nii.gz")) and (reason := _readable(path)):
                problems.append(Problem(str(path), "unreadable", reason))
    return problems, checked
