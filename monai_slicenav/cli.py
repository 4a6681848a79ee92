"""The ``slicenav`` command line (built with fire). Run ``slicenav --help`` or ``slicenav COMMAND --help``."""

from __future__ import annotations

import inspect
import math
import sys
import textwrap
from pathlib import Path

import fire

from .data import (
    COARSE_LABELS,
    check_manifest,
    check_pair,
    load_manifest,
    load_packaged_manifest,
    manifest_dir,
    shepp_logan_volume,
)
from .encoders import export_from_bundle
from .experiments.evaluate import DEFAULT_OUT
from .experiments.evaluate import evaluate as run_evaluation
from .experiments.pretrain import pretrain
from .experiments.variants import variant_help
from .io import atomic_write_bytes, atomic_write_json, check_output_dir, load_volume, png_bytes, read_json_object
from .pack import pack_bundle
from .plan_run import RENDERER, plan_episode
from .transforms import navigate, replay, trajectory_to_dict
from .visualize import action_caption, slice_grid
from .volume import scale_intensity
from .workflows.controllability import describe
from .zoo import zoo_problems

__all__ = ["DataCLI", "SliceNavCLI", "main"]

BUILTIN_EXAMPLE = "builtin:shepp_logan"


class DataCLI:
    """What data this machine has, and checks of datasets you downloaded yourself."""

    def list(self) -> None:
        """List the data available here: synthetic volumes, packaged real volumes, public dataset manifests."""
        print("synthetic: label-ensemble volumes with random appearance, generated on the fly (always available)")
        manifest = load_packaged_manifest()
        volumes = {v["id"]: v for v in manifest["volumes"]}
        print("packaged real volumes (image/label pairs, grids checked):")
        for pair in manifest["pairs"]:
            check = check_pair(pair, volumes)
            print(f"  [{'x' if check.usable else ' '}] {check.message}")
        not_datasets = {"packaged_volumes.json", COARSE_LABELS}
        names = sorted(p.stem for p in manifest_dir().glob("*.json") if p.name not in not_datasets)
        print("public datasets you download yourself (slicenav data check NAME --root DIR):")
        for name in names:
            record = load_manifest(name)
            print(f"  {name}: {record.get('title', '')} [{record['licence']}] {record['homepage']}")

    def check(self, manifest: str, root: str) -> None:
        """Check a downloaded dataset against its manifest; reads only, exits 1 when anything is wrong.

        Args:
            manifest: a manifest file or name (e.g. msd_task04_hippocampus).
            root: the dataset folder.
        """
        problems, checked = check_manifest(manifest, root)
        for problem in problems:
            print(f"{problem.kind.upper():<10} {problem.path}: {problem.detail}")
        print(f"{checked} files checked, {len(problems)} problems")
        if problems:
            sys.exit(1)


class SliceNavCLI:
    """Self-supervised pretraining for 3D MRI by controllable 2D slice navigation."""

    def __init__(self) -> None:
        self.data = DataCLI()

    def render(
        self,
        image: str | None = None,
        out: str = "slicenav_render",
        steps: int = 16,
        mode: str = "mixed",
        size: int = 128,
        seed: int = 0,
        spacing: float | None = None,
        threshold: float = 0.05,
        start: str = "canonical",
        columns: int = 8,
        trajectory: str | None = None,
    ) -> dict[str, str]:
        """Render a slice-navigation trajectory through a volume: writes trajectory.png and trajectory.json.

        Args:
            image: a NIfTI file (any MONAI-readable 3D image); omitted: the built-in head phantom.
            out: output folder (created when missing).
            steps: number of actions T (T + 1 slices).
            mode: scroll | tilt | zoom | mixed.
            size: slice size in pixels (square).
            seed: random seed of the trajectory.
            spacing: in-plane pixel size in mm; omitted: fit the foreground into the slice.
            threshold: foreground threshold on intensities scaled to [0, 1] (0.5th-99.5th percentile).
            start: start orientation, canonical | random | axial | coronal | sagittal.
            columns: tiles per row in the PNG.
            trajectory: a trajectory JSON (written by render or ``slicenav navigate``) to render again, pose for
                pose, instead of drawing a random one (steps, mode, seed, spacing and start are then unused).
        """
        check_output_dir(out)
        seed = _bounded_int(seed, "--seed", 0, 2**32 - 1)
        steps = _bounded_int(steps, "--steps", 1, 4096)
        size = _bounded_int(size, "--size", 1, 4096)
        columns = _bounded_int(columns, "--columns", 1, 4096)
        spacing = None if spacing is None else _positive_float(spacing, "--spacing")
        threshold = _finite_float(threshold, "--threshold")
        volume = load_volume(image, channels=1) if image else shepp_logan_volume(160)
        scaled = scale_intensity(volume)
        if trajectory is not None:
            run, size = replay(scaled, read_json_object(trajectory), str(trajectory))
            mode, seed, start = "replayed", None, None
        else:
            run = navigate(
                scaled, steps, size, mode=mode, seed=seed, spacing=spacing, threshold=threshold, start_orientation=start
            )
        captions = [action_caption(0, None)] + [action_caption(t + 1, a) for t, a in enumerate(run.actions)]
        picture = slice_grid(run.slices, captions, columns=columns, value_range=(0.0, 1.0))
        out_dir = Path(out)
        png = atomic_write_bytes(out_dir / "trajectory.png", png_bytes(picture))
        record = trajectory_to_dict(
            run.poses,
            run.actions,
            size,
            image=str(image) if image else BUILTIN_EXAMPLE,
            affine=scaled.affine.tolist(),
            mode=mode,
            seed=seed,
            start_orientation=start,
            intensity_scaling="percentiles 0.5-99.5 -> [0, 1], clipped",
            threshold=threshold,
            **({"replayed": str(trajectory)} if trajectory is not None else {}),
        )
        json_path = atomic_write_json(out_dir / "trajectory.json", record)
        return {"png": str(png), "json": str(json_path)}

    def export(self, bundle_dir: str, out: str, which: str = "encoder") -> dict[str, str]:
        """Export a trained bundle's encoder as encoder.pt + encoder.json (the format every variant shares).

        Args:
            bundle_dir: a trained pretraining bundle's folder (with configs/ and models/model.pt).
            out: output folder.
            which: encoder (every bundle) or context_encoder (slicenav_dynamics).
        """
        check_output_dir(out)
        weights, meta = export_from_bundle(bundle_dir, out, which=which)
        return {"weights": str(weights), "config": str(meta)}

    def pretrain(
        self,
        variant: str,
        steps: int,
        out: str,
        seed: int = 0,
        preset: str = "default",
        cache_dir: str | None = None,
        data: str | None = None,
        data_root: str | None = None,
        val_data: str | None = None,
        contrastive_weight: float = 0.0,
    ) -> str:
        """Pretrain one variant with a matched step budget and export its encoder to OUT/encoder.

        Args:
            variant: one of {variants}
            steps: optimizer steps in total (dynamics variants: half for the tokenizer, half for the dynamics).
            out: output folder (encoder/, pretrain.json; slice_encoder/ for the dynamics variants).
            seed: seeds data, initialisation and sampling.
            preset: default (the bundles' sizes) | small (CPU-friendly) | micro (smoke test).
            cache_dir: where stage runs are kept and reused (share it between variants); default OUT/stages.
            data: your own scans (a folder searched recursively for NIfTI, a glob, a .txt/.csv list, or a
                data_manifests/*.json manifest with --data_root); default: the embedded synthetic volumes.
            data_root: the dataset folder of a manifest given as --data.
            val_data: validation scans of your own; default: a seeded held-out split of --data.
            contrastive_weight: > 0 adds the appearance-contrastive term to the slice tokenizer's loss
                (tokenizer_only and the dynamics variants; synthetic data only).
        """
        check_output_dir(out)
        if cache_dir is not None:
            check_output_dir(cache_dir, "--cache_dir")
        record = pretrain(
            variant, steps, out, seed=seed, preset=preset, cache_dir=cache_dir, data=data, data_root=data_root,
            val_data=val_data, contrastive_weight=contrastive_weight,
        )  # fmt: skip
        for stage in record["stages"]:
            state = "reused" if stage["reused"] else f"{stage['wall_s']} s"
            metrics = stage["val_metrics"]
            key = {k: round(v, 4) for k, v in metrics.items() if not k.startswith("ctrl_")}
            print(f"{stage['bundle']}: {state}, validation {key}")
            if "ctrl_ratio_true_copy" in metrics:
                print(f"  controllability on held-out validation trajectories: {describe(metrics)}")
        return record["encoder"]

    def evaluate(
        self,
        variants: str | tuple = "all",
        seeds: int | tuple = 3,
        budget: str = "small",
        out: str = DEFAULT_OUT,
        data: str | None = None,
        data_root: str | None = None,
    ) -> str:
        """Pretrain every variant with the same budget and compare them on held-out real anatomy: spatial probes,
        few-shot segmentation, registration. Writes OUT/results.md, results.csv, results.png and run.json; finished
        cells are reused when run again.

        Args:
            variants: all (with --data: all but those that need label maps), or a comma-separated subset of
                {rows}
            seeds: seeds per variant (0 .. SEEDS - 1), or a comma-separated list of seeds (e.g. 6,7,8: add seeds to a
                run, or reuse the stage runs of those seeds).
            budget: micro (smoke test, about a minute) | small (3 seeds in about 2 hours on 2 CPU cores) | paper
                (GPU-scale, documented).
            out: output folder.
            data: pretrain on your own scans (as `slicenav pretrain --data`); evaluation stays on the templates.
            data_root: the dataset folder of a manifest given as --data.
        """
        if isinstance(variants, (list, tuple)):  # fire parses "a,b" as a tuple
            chosen: str | list[str] = [str(v) for v in variants]
        else:
            chosen = variants if variants == "all" else [v.strip() for v in str(variants).split(",") if v.strip()]
        check_output_dir(out)
        run_evaluation(chosen, seeds=seeds, budget=budget, out=out, data=data, data_root=data_root)
        print((Path(out) / "results.md").read_text())
        return str(Path(out) / "results.md")

    def navigate(
        self,
        image: str | None = None,
        model: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        landmarks: str | None = None,
    ) -> None:
        """Steer through a volume in the browser and watch, beside the true slice, the slice a trained dynamics
        model predicts from the last slices and the action just taken (keys are listed on the page). Serves until
        interrupted (Ctrl+C).

        Args:
            image: a NIfTI file (any MONAI-readable 3D image); omitted: the built-in head phantom.
            model: a trained dynamics stage: a slicenav_dynamics bundle root or a ``slicenav pretrain`` output folder
                of a dynamics variant.
            host: the address to listen on (default 127.0.0.1: this machine only).
            port: the port (0: a free one, printed).
            landmarks: a JSON of the head's landmarks in world mm (RAS), {"AC": [x, y, z], "PC": [...], "IH": [...]}:
                "go to" then also offers acpc-axial, acpc-coronal and midsagittal.
        """
        from .viewer import make_server, open_session

        if model is None:
            raise ValueError("--model is required: a trained dynamics stage (bundle root or slicenav pretrain output).")
        port = _bounded_int(port, "--port", 0, 65535)
        server = make_server(open_session(image, model, landmarks=landmarks), str(host), port)
        print(f"slicenav navigate: serving {server.url} (Ctrl+C stops)", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()

    def plan(self, image: str | None = None, model: str = RENDERER, goal: str | None = None, out: str = "slicenav_plan",
             size: int = 64, steps: int = 10, seed: int = 0, landmarks: str | None = None) -> dict:  # fmt: skip
        """Bring the slice plane from the volume's axial centre to a goal view by planning with a world model;
        writes trajectory.json, plan.png (the slices seen, then the goal) and plan.json (costs, time, pose error).

        Args:
            image: a NIfTI file; omitted: the built-in head phantom.
            model: a trained dynamics stage (bundle root or slicenav pretrain output), or "renderer" (upper bound).
            goal: a named plane (axial, coronal, sagittal: through the foreground centre; acpc-axial,
                acpc-coronal, midsagittal: through the commissures, with --landmarks), a trajectory JSON (its last
                pose is the goal) or a PNG slice of size x size pixels.
            out: output folder.
            size, steps, seed: slice size in pixels, most actions executed, planner seed.
            landmarks: a JSON of the head's landmarks in world mm (RAS), {"AC": [x, y, z], "PC": [...], "IH": [...]}
                (anterior and posterior commissure, an inter-hemispheric point high in the midline).
        """
        if goal is None:
            raise ValueError("--goal is required: a named plane, a trajectory .json (its last pose) or a .png slice.")
        check_output_dir(out)
        size, steps = _bounded_int(size, "--size", 8, 1024), _bounded_int(steps, "--steps", 1, 1000)
        seed = _bounded_int(seed, "--seed", 0, 2**31)
        return plan_episode(image, str(model), str(goal), out, size, steps, seed, landmarks)

    def pack(self, bundle_dir: str, out: str = ".", version: str | None = None, description: str | None = None) -> str:
        """Write the model-zoo archive NAME.zip (NAME/configs, docs, LICENSE, models/model.pt) of a trained bundle,
        with the hyper-parameters it was trained with (configs/trained.yaml) and metadata naming its data.

        Args:
            bundle_dir: the bundle folder (left unchanged).
            out: output folder.
            version: the packed bundle's version (MAJOR.MINOR.PATCH), recorded first in its changelog.
            description: the packed bundle's description (and the changelog entry of ``version``).
        """
        check_output_dir(out)
        version = None if version is None else str(version)
        description = None if description is None else str(description)
        return str(pack_bundle(bundle_dir, out, version=version, description=description))

    def check(self, bundle: str, schema: str | None = None) -> None:
        """Run the model zoo's checks on a bundle folder or a packed NAME.zip (files, version in the changelog, files
        over 25 MB listed in large_files.yml, a data licence note where the training data has one); exits 1 when
        anything is wrong.

        Args:
            bundle: the bundle folder or NAME.zip.
            schema: a local copy of the metadata schema, to also run monai.bundle.verify_metadata offline.
        """
        problems = zoo_problems(bundle, schema)
        for problem in problems:
            print(problem)
        print(f"{bundle}: {'passes the model zoo checks' if not problems else f'{len(problems)} problems'}")
        if problems:
            sys.exit(1)


def _listed(lines: str) -> str:
    """``name: summary`` lines as one help paragraph (fire reads an argument's text up to the next ``name:``)."""
    entries = [line.replace(": ", " (", 1) + ")" for line in lines.splitlines()]
    return textwrap.fill("; ".join(entries) + ".", width=104, subsequent_indent=" " * 16)


_HELP_TEMPLATES = {"pretrain": SliceNavCLI.pretrain.__doc__, "evaluate": SliceNavCLI.evaluate.__doc__}


def _fill_variant_help() -> None:
    """The variants in the help of ``pretrain`` and ``evaluate``, from the one table as it is now (a variant
    registered at run time included)."""
    SliceNavCLI.pretrain.__doc__ = _HELP_TEMPLATES["pretrain"].replace("{variants}", _listed(variant_help()))
    rows = _listed(variant_help(controls=True))
    SliceNavCLI.evaluate.__doc__ = _HELP_TEMPLATES["evaluate"].replace("{rows}", rows)


def _bounded_int(value: object, option: str, low: int, high: int) -> int:
    """``value`` as an int in [low, high], else a ValueError naming the option."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{option} must be an integer in [{low}, {high}], got {value!r}.")
    return value


def _finite_float(value: object, option: str) -> float:
    """``value`` as a finite float, else a ValueError naming the option (fire passes "nan" as a string)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number):
        raise ValueError(f"{option} must be a finite number, got {value!r}.")
    return number


def _positive_float(value: object, option: str) -> float:
    number = _finite_float(value, option)
    if number <= 0:
        raise ValueError(f"{option} must be > 0, got {value!r}.")
    return number


def _check_options(args: list[str]) -> None:
    """Refuse unknown ``--options`` of a top-level command before it runs: fire would run the command first and
    only then complain about what it could not consume (after a whole training run, for a misspelt option)."""
    command = getattr(SliceNavCLI, args[0], None) if args else None
    if not inspect.isfunction(command):  # the data group and fire's own flags are left to fire
        return
    known = set(inspect.signature(command).parameters) - {"self"}
    for word in args[1:]:
        name = word[2:].split("=", 1)[0].replace("-", "_")
        if word.startswith("--") and word not in ("--", "--help") and name not in known:
            raise ValueError(f"unknown option {word} (options: {', '.join('--' + k for k in sorted(known))}).")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``slicenav`` console script; bad input prints one clear line and exits with status 2."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args in (["--help"], ["-h"]):  # fire's own help for the bare class lists no commands; the bare call does
        args = []
    _fill_variant_help()
    try:
        _check_options(args)
        fire.Fire(SliceNavCLI, command=args, name="slicenav")
    except (ValueError, TypeError, FileNotFoundError, KeyError) as err:
        print(f"slicenav: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
