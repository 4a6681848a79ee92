"""Plant representative bugs, one at a time, into a temporary copy of the project and run the tests that should
catch each; print caught / not caught. A habit, not part of CI (a full run takes several minutes):

    python bench/mutations.py                 # every mutation
    python bench/mutations.py --only rollout  # the ones whose name contains "rollout"

A mutation is (name, file, the exact text it replaces, the bug, the test files to run). The script refuses a
mutation whose text is no longer in the file, so the list cannot silently go stale.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]


class Mutation(NamedTuple):
    name: str
    file: str
    original: str
    bug: str
    tests: tuple[str, ...]


MUTATIONS = (
    Mutation(
        "batched renderer samples every volume at the first volume's points",
        "monai_slicenav/transforms/render.py",
        "for vol, points in zip(volume, grid, strict=True)",
        "for vol, points in zip(volume, grid[:1].expand_as(grid), strict=True)",
        ("tests/test_render.py",),
    ),
    Mutation(
        "token-causal instead of block-causal attention",
        "monai_slicenav/networks/dynamics.py",
        "return step_of[None, :] > step_of[:, None]",
        "return torch.ones(len(step_of), len(step_of), dtype=torch.bool, device=device).triu(1)",
        ("tests/test_dynamics.py",),
    ),
    Mutation(
        "the dynamics bundle trains every ablation as aligned",
        "bundles/slicenav_dynamics/configs/train.yaml",
        "  action_mode: '@action_mode'\n",
        "  action_mode: aligned\n",
        ("tests/test_bundle_dynamics.py",),
    ),
    Mutation(
        "an aligned model ignores its actions",
        "monai_slicenav/networks/dynamics.py",
        'if mode == "none":\n            return None',
        "if True:\n            return None",
        ("tests/test_controllability.py", "tests/test_dynamics.py"),
    ),
    Mutation(
        "shuffled actions are not deranged",
        "monai_slicenav/networks/dynamics.py",
        "moved[order] = rows[order.roll(-1)]",
        "moved[order] = rows[order]",
        ("tests/test_dynamics.py",),
    ),
    Mutation(
        "residual prediction forgets the current latents",
        "monai_slicenav/networks/dynamics.py",
        "return current + out",
        "return out",
        ("tests/test_dynamics.py",),
    ),
    Mutation(
        "rollout feeds back copies instead of its predictions",
        "monai_slicenav/networks/navigator.py",
        "tokens = torch.cat([tokens, prediction], dim=1)",
        "tokens = torch.cat([tokens, tokens[:, -1:]], dim=1)",
        ("tests/test_navigator.py",),
    ),
    Mutation(
        "the in-plane warp reference ignores rotation and zoom",
        "monai_slicenav/workflows/controllability.py",
        "points = slice_points(apply_action(here, actions.to(dtype)), (h, w))",
        "points = slice_points(apply_action(here, actions.to(dtype) * torch.tensor([1.0, 1, 1, 0, 0, 0, 0])), (h, w))",
        ("tests/test_controllability.py",),
    ),
    Mutation(
        "loading reorients to LPS instead of RAS",
        "monai_slicenav/transforms/embedded.py",
        'Orientation(axcodes="RAS", labels=None)',
        'Orientation(axcodes="LPS", labels=None)',
        ("tests/test_own_scans.py", "tests/test_embedded.py"),
    ),
    Mutation(
        "the reseed handler ignores the epoch",
        "monai_slicenav/workflows/handlers.py",
        "seed = self.seed + (engine.state.epoch if self.per_epoch else 0)",
        "seed = self.seed",
        ("tests/test_workflows.py", "tests/test_bundle_tokenizer.py"),
    ),
    Mutation(
        "per-epoch reseeding leaves torch's generator (DataLoader shuffling) alone",
        "monai_slicenav/workflows/handlers.py",
        "            torch.manual_seed(seed)\n",
        "",
        ("tests/test_resume.py",),
    ),
    Mutation(
        "resume does not restore the model (slice-pretraining bundles)",
        "bundles/slicenav_tokenizer/configs/pretraining.yaml",
        "  load_dict:\n    model: '@network'\n",
        "  load_dict:\n",
        ("tests/test_resume.py",),
    ),
    Mutation(
        "resume does not restore the learning-rate schedule",
        "bundles/slicenav_tokenizer/configs/pretraining.yaml",
        "    lr_scheduler: '@train#lr_scheduler'\n    trainer: '@train#trainer'\n  map_location",
        "    trainer: '@train#trainer'\n  map_location",
        ("tests/test_resume.py",),
    ),
    Mutation(
        "the segmentation bundle does not reseed per epoch",
        "bundles/slicenav_segmentation/configs/train.yaml",
        "      per_epoch: true                # epoch e draws from seed + e: a resumed run sees the same crops\n",
        "      per_epoch: false\n",
        ("tests/test_resume.py",),
    ),
    Mutation(
        "a rank > 0 builds the TensorBoard writer",
        "bundles/slicenav_tokenizer/configs/pretraining.yaml",
        "    - _target_: TensorBoardStatsHandler\n      _disabled_: '$not @is_main_rank'\n",
        "    - _target_: TensorBoardStatsHandler\n",
        ("tests/test_bundle_dynamics.py",),
    ),
    Mutation(
        "tokenizer inference builds the bundle's default network instead of the trained one",
        "monai_slicenav/encoders/trained.py",
        '        network = builders[record["architecture"]](**config)',
        '        network = builders[record["architecture"]]()',
        ("tests/test_bundle_tokenizer.py",),
    ),
    Mutation(
        "feature registration returns a zero displacement field",
        "monai_slicenav/downstream/registration.py",
        "return _resize_ddf(integrate(velocity), shape)",
        "return torch.zeros_like(_resize_ddf(integrate(velocity), shape))",
        ("tests/test_registration.py",),
    ),
    Mutation(
        "a NaN encoder is exported",
        "monai_slicenav/encoders/record.py",
        "    if broken:\n        raise ValueError(",
        "    if False:\n        raise ValueError(",
        ("tests/test_untrusted_files.py",),
    ),
    Mutation(
        "written files are private (0600) again",
        "monai_slicenav/io.py",
        "            os.chmod(temporary, mode)\n",
        "",
        ("tests/test_share.py",),
    ),
    Mutation(
        "a damaged cache entry is reused",
        "monai_slicenav/experiments/pretrain.py",
        "record = reusable(record_path, key, lambda _: _intact(bundle, root))",
        "record = reusable(record_path, key)",
        ("tests/test_untrusted_files.py",),
    ),
)


def run(mutation: Mutation) -> tuple[bool, float]:
    """Whether the tests fail on the mutated copy (the bug is caught), and how long they took."""
    with tempfile.TemporaryDirectory(prefix="slicenav_mutant_") as folder:
        copy = Path(folder) / "repo"
        shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".git", ".venv", "runs", "__pycache__", "*.egg-info"))
        target = copy / mutation.file
        text = target.read_text()
        if mutation.original not in text:
            raise SystemExit(f"{mutation.file}: the text of mutation {mutation.name!r} is gone; update the list.")
        target.write_text(text.replace(mutation.original, mutation.bug, 1))
        start = time.perf_counter()
        # python -m pytest puts the copy first on sys.path, so the mutated package is the one imported
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *mutation.tests],
            cwd=copy, capture_output=True, text=True,
        )  # fmt: skip
        return result.returncode != 0, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="run the mutations whose name contains this")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if args.only in m.name]
    print("| mutation | caught | seconds |\n|---|---|---|")
    caught = 0
    for mutation in chosen:
        found, seconds = run(mutation)
        caught += found
        print(f"| {mutation.name} | {'yes' if found else '**no**'} | {seconds:.0f} |", flush=True)
    print(f"\n{caught} of {len(chosen)} caught")


if __name__ == "__main__":
    main()
