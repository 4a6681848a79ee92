"""Output paths: an --out that is a file, or lies below one, fails before any work (before training, for
pretrain and evaluate) with one line naming the path, and the file in the way is left as it was."""

import pytest

from monai_slicenav.cli import main

from .harness import handled

KLASS = "output paths"


@pytest.mark.parametrize(
    "command",
    [
        ["render", "--steps", "2", "--size", "16"],
        ["pretrain", "tokenizer_only", "2", "--preset", "micro"],
        ["evaluate", "--variants", "random", "--budget", "micro"],
        ["pack", "bundles/slicenav_tokenizer"],
        ["export", "bundles/slicenav_tokenizer"],
    ],
    ids=lambda c: c[0],
)
@pytest.mark.parametrize("where", ["file", "below_a_file"])
def test_output_paths_that_cannot_be_folders_fail_first(tmp_path, capsys, command, where):
    blocker = tmp_path / "taken"
    blocker.write_text("keep me")
    out = blocker if where == "file" else blocker / "sub"
    run = lambda: main([*command, "--out", str(out)])  # noqa: E731
    handled(KLASS, f"slicenav {command[0]}", f"--out {where}", tmp_path, run, f"{out}.*is a file", capsys)
