"""The hostile sweep's harness: run one bad input through a user-facing entry point and check that it was handled
(a non-zero exit or a refusal, a message naming the file or value, nothing written or overwritten), recording each
case for the sweep table (``test-artifacts/reliability_sweep.md``, written by this package's conftest)."""

import hashlib
import re
from collections.abc import Callable
from fnmatch import fnmatch
from pathlib import Path

import pytest

SWEEP: list[dict] = []  # one row per checked case, filled as the tests run


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by path relative to it."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _chain(err: BaseException) -> str:
    """An error's message with those of its causes (MONAI wraps transform errors; configs wrap component errors)."""
    parts = []
    while err is not None:
        parts.append(str(err))
        err = err.__cause__ or err.__context__
    return " <- ".join(parts)


def handled(
    klass: str,
    entry: str,
    case: str,
    root: Path,
    action: Callable[[], object],
    says: str,
    capsys: pytest.CaptureFixture | None = None,
    may_write: tuple[str, ...] = (),
    errors: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, RuntimeError),
) -> str:
    """Run ``action`` (the entry point on the bad input prepared under ``root``) and assert it was handled:

    * a CLI (``capsys`` given) exits with status 2 and prints one ``slicenav: error:`` line;
    * a Python or bundle entry point raises one of ``errors`` (in a ``python -m monai.bundle run``: exit 1);
    * the message (with its causes) matches ``says``;
    * no file under ``root`` was changed or removed, and new ones only match ``may_write`` (logs).

    Returns the message; the case is recorded in :data:`SWEEP`.
    """
    before = snapshot(root)
    row = {"class": klass, "entry": entry, "case": case, "handled": False}
    SWEEP.append(row)
    if capsys is not None:
        capsys.readouterr()
        with pytest.raises(SystemExit) as stopped:
            action()
        message = capsys.readouterr().err
        assert stopped.value.code == 2, message
        assert message.startswith("slicenav: error: ") and message.count("\n") == 1, message
    else:
        with pytest.raises(errors) as raised:
            action()
        message = _chain(raised.value)
    assert re.search(says, message), f"{says!r} not in {message!r}"
    after = snapshot(root)
    changed = [p for p, digest in before.items() if after.get(p) != digest]
    added = [p for p in after if p not in before and not any(fnmatch(p, pattern) for pattern in may_write)]
    assert not changed and not added, f"written: changed {changed}, added {added}"
    row["handled"] = True
    return message


def record(klass: str, entry: str, case: str) -> None:
    """Record a case checked by its own assertions (resume, fidelity) as handled, once they have passed."""
    SWEEP.append({"class": klass, "entry": entry, "case": case, "handled": True})
