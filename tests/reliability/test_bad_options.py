"""Bad options and arguments of every command: one line naming the option (or the path) and its allowed values,
exit status 2, and nothing trained or written; unknown options are refused before a command runs."""

import pytest

from monai_slicenav.cli import main

from .harness import handled

KLASS = "bad options"
CASES = [
    (["render", "--seed", "99999999999999999999"], r"--seed must be an integer in \[0, 4294967295\]"),
    (["render", "--spacing", "-1"], "--spacing must be > 0"),
    (["render", "--size", "0"], r"--size must be an integer in \[1, 4096\]"),
    (["render", "--size", "100000"], r"--size must be an integer in \[1, 4096\]"),
    (["render", "--steps", "0"], "--steps must be an integer"),
    (["render", "--colour", "red"], "unknown option --colour"),
    (["evaluate", "--variants", ""], "variants is empty"),
    (["evaluate", "--variants", "dynamics_sideways"], "dynamics_sideways"),
    (["evaluate", "--seeds", "0"], "seeds"),
    (["evaluate", "--budget", "huge"], "budget"),
    (["pretrain", "dynamics_sideways", "4", "{out}"], "variant must be one of"),
    (["pretrain", "dynamics_aligned", "1", "{out}", "--preset", "micro"], "needs at least 2 steps"),
    (["pretrain", "tokenizer_only", "4", "{out}", "--preset", "giant"], "preset must be one of"),
    (["pretrain", "tokenizer_only", "4", "{out}", "--data_dir", "x"], "unknown option --data_dir"),
    (["pretrain", "tokenizer_only", "4", "{out}", "--data", "{tmp}/nowhere"], "no such file, folder or glob match"),
    (["pretrain", "tokenizer_only", "4", "{out}", "--data", "{tmp}"], "no NIfTI volumes found"),
    (["evaluate", "--variants", "random", "--data", "{tmp}/nowhere"], "no such file, folder or glob match"),
    (["export", "{tmp}/no_bundle", "--out", "{out}"], "no_bundle"),
    (["pack", "{tmp}/no_bundle", "--out", "{out}"], "no_bundle"),
    (["navigate"], "--model is required"),
    (["navigate", "--model", "{tmp}"], "not a trained dynamics stage"),
    (["navigate", "--model", "{tmp}", "--port", "70000"], "--port must be an integer"),
    (["data", "check", "{tmp}/missing.json", "--root", "{tmp}"], "missing.json"),
]


@pytest.mark.parametrize(("argv", "says"), CASES, ids=[" ".join(c[0][:3]) for c in CASES])
def test_bad_options_get_one_line_and_write_nothing(tmp_path, capsys, argv, says):
    args = [a.format(tmp=tmp_path, out=tmp_path / "out") for a in argv]
    if args[0] in ("render", "evaluate") and "--out" not in args:
        args += ["--out", str(tmp_path / "out")]
    handled(KLASS, f"slicenav {args[0]}", " ".join(argv[1:3]), tmp_path, lambda: main(args), says, capsys)
