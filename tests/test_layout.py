"""The package layout: every module imports on its own, imports run one way through the layers (no cycle, no
back-arrow), no module grows past ~400 lines, and the public paths users and bundles import keep working."""

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "monai_slicenav"

# lower layers first; a module may import its own layer's modules and lower layers only
LAYERS = (
    ("geometry", "volume", "io"),
    ("networks", "data"),
    ("transforms",),
    ("encoders", "export"),
    ("workflows", "downstream", "planning"),
    ("experiments", "visualize", "pack", "zoo", "viewer", "plan_run"),
    ("cli",),
)


def _modules() -> dict[str, Path]:
    return {
        ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): path
        for path in PACKAGE.rglob("*.py")
    }


def _imports(name: str, path: Path) -> set[str]:
    """The package modules ``name`` imports (relative and absolute), as dotted names."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                found.add(candidate if candidate in _modules() else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {t for t in found if t.startswith("monai_slicenav")}


def _layer(name: str) -> int:
    top = name.split(".")[1] if name.count(".") else ""
    return next((i for i, group in enumerate(LAYERS) if top in group), -1)


def test_the_import_graph_is_acyclic():
    modules = _modules()
    graph = {name: {t for t in _imports(name, path) if t in modules and t != name} for name, path in modules.items()}
    # an __init__ re-exporting its own submodules is not a cycle: drop package -> own submodule edges
    graph = {name: {t for t in targets if not t.startswith(name + ".")} for name, targets in graph.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            assert state.get(nxt) != 1, f"import cycle: {' -> '.join([*trail, node, nxt])}"
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])


def test_imports_run_one_way_through_the_layers():
    modules = _modules()
    assert all(_layer(n) >= 0 for n in modules if n != "monai_slicenav"), [n for n in modules if _layer(n) < 0]
    back_arrows = [
        f"{name} -> {target}"
        for name, path in modules.items()
        if name != "monai_slicenav"
        for target in _imports(name, path)
        if target in modules and target != "monai_slicenav" and _layer(target) > _layer(name)
    ]
    assert not back_arrows


def test_no_module_is_over_400_lines():
    sizes = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    assert {n: s for n, s in sizes.items() if s > 400} == {}


def test_every_module_imports_in_a_fresh_interpreter():
    """Each module, in sorted order, in one fresh interpreter (the acyclic graph above makes the order immaterial;
    one interpreter per module would cost minutes)."""
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)"
    result = subprocess.run(
        [sys.executable, "-c", code, *sorted(_modules())], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_public_paths_keep_working():
    from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE

    export = importlib.import_module("monai_slicenav.export")
    encoders = importlib.import_module("monai_slicenav.encoders")
    assert export.load_encoder is encoders.load_encoder and export.SliceEncoder is encoders.SliceEncoder
    assert encoders.SliceEncoder.from_pretrained.__func__.__qualname__.endswith("from_pretrained")
    transforms = importlib.import_module("monai_slicenav.transforms")
    for public in ("RandSliceTrajectoryd", "RenderSlicesd", "EmbeddedVolumed", "LoadTrajectoryd", "CoarseLabelsd"):
        assert hasattr(transforms, public)
    importlib.import_module("monai_slicenav")
    assert "slicenav-lift3d" in FLEXUNET_BACKBONE.register_dict


def test_evaluation_outputs_are_not_committed():
    """`slicenav evaluate`'s default output folder is ignored and nothing under it is tracked."""
    from monai_slicenav.experiments.evaluate import DEFAULT_OUT

    repo = PACKAGE.parent
    if not (repo / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(["git", "check-ignore", "-q", f"{DEFAULT_OUT}/results.md"], cwd=repo)
    assert ignored.returncode == 0, f"{DEFAULT_OUT}/ is not in .gitignore"
    tracked = subprocess.run(["git", "ls-files", DEFAULT_OUT], cwd=repo, capture_output=True, text=True).stdout
    assert tracked == ""


PRETRAINING_BUNDLES = ("slicenav_tokenizer", "slicenav_dynamics", "static_volume_baseline", "voxel_contrastive")
SHARED_CONFIGS = ("pretraining.yaml", "multi_gpu_train.yaml")


def test_the_pretraining_bundles_stack_one_base_held_as_real_files():
    """Every pretraining bundle holds the base config and the distributed overrides as the same bytes, as real files
    (a packed zip is self-contained), and no link anywhere under bundles/."""
    bundles = PACKAGE.parent / "bundles"
    assert [p for p in bundles.rglob("*") if p.is_symlink()] == []
    for name in SHARED_CONFIGS:
        texts = {b: (bundles / b / "configs" / name).read_bytes() for b in PRETRAINING_BUNDLES}
        different = [b for b, text in texts.items() if text != texts[PRETRAINING_BUNDLES[0]]]
        assert not different, f"configs/{name} of {different} differs from {PRETRAINING_BUNDLES[0]}'s: copy it over"


def _shared_blocks(a: list[str], b: list[str], length: int) -> list[str]:
    """Runs of more than ``length`` consecutive non-blank lines of ``a`` that appear in ``b`` too."""
    a, b = [x.rstrip() for x in a if x.strip()], [x.rstrip() for x in b if x.strip()]
    windows = {tuple(b[i : i + length + 1]) for i in range(len(b) - length)}
    return [a[i] for i in range(len(a) - length) if tuple(a[i : i + length + 1]) in windows]


def test_train_configs_hold_only_what_differs():
    configs = PACKAGE.parent / "bundles"
    base = (configs / "slicenav_tokenizer" / "configs" / "pretraining.yaml").read_text().splitlines()
    for bundle in PRETRAINING_BUNDLES:
        train = (configs / bundle / "configs" / "train.yaml").read_text().splitlines()
        assert _shared_blocks(train, base, 10) == [], bundle
