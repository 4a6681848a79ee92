"""Malformed files: trajectories (``--trajectory`` of the dynamics inference and of ``slicenav render``), encoder
records, bundle metadata, dataset manifests and training records are checked before anything is rendered, built or
searched; each refusal names the file and the field. A trajectory with a rotation that is not a rotation, actions
that do not lead from pose to pose, non-finite numbers or slice centres far outside the volume is refused; a file as
written by the renderer loads."""

import json

import pytest
import torch
from monai.data import MetaTensor

from monai_slicenav.cli import main
from monai_slicenav.export import load_encoder
from monai_slicenav.transforms import LoadTrajectoryd, RandSliceTrajectory, trajectory_to_dict

from .harness import handled
from .inputs import rewrite, trained_copy


@pytest.fixture
def written(tmp_path):
    """A trajectory.json as the renderer writes it, on a 40^3 volume of 1 mm voxels."""
    volume = MetaTensor(torch.ones(1, 40, 40, 40), affine=torch.eye(4, dtype=torch.float64))
    sampler = RandSliceTrajectory(4, 32, mode="mixed", max_translation=4.0, max_rotation=0.2)
    sampler.set_random_state(0)
    poses, actions = sampler(volume)
    record = trajectory_to_dict(poses, actions, 32)
    path = tmp_path / "trajectory.json"
    path.write_text(json.dumps(record))
    return volume, record, path


def _rewrite(path, record) -> None:
    path.write_text(json.dumps(record))


def test_a_written_trajectory_loads_as_it_was_sampled(written):
    volume, record, path = written
    loaded = LoadTrajectoryd(path)({"image": volume})
    assert torch.allclose(loaded["actions"], torch.tensor(record["actions"]))


@pytest.mark.parametrize(
    "spoil, message",
    [
        (lambda r: r["poses"][2].update(rotation=[[2, 0, 0], [0, 1, 0], [0, 0, 1]]), "pose 2: 'rotation' is not"),
        (lambda r: r["poses"][1].update(rotation=[[-1, 0, 0], [0, 1, 0], [0, 0, 1]]), "pose 1: 'rotation' is not"),
        (lambda r: r["actions"][3].__setitem__(0, r["actions"][3][0] + 5.0), "action 3 does not lead"),
        (lambda r: r["poses"][0].update(spacing_mm=0.0), "pose 0: 'spacing_mm' must be > 0"),
        (lambda r: r["actions"][0].__setitem__(2, float("nan")), "the trajectory holds NaN or Inf"),
    ],
    ids=["scaled", "reflection", "inconsistent", "zero_spacing", "nan"],
)
def test_malformed_trajectories_are_refused_by_name(written, spoil, message):
    _, record, path = written
    spoil(record)
    _rewrite(path, record)
    with pytest.raises(ValueError, match=f"trajectory.json: {message}"):
        LoadTrajectoryd(path)


def test_poses_of_another_scan_are_refused_at_render_time(written):
    volume, record, path = written
    for pose in record["poses"]:
        pose["center_mm"] = [c + 1e6 for c in pose["center_mm"]]  # the same walk, a million mm away
    _rewrite(path, record)
    with pytest.raises(ValueError, match="trajectory.json: pose 0's centre .* far outside the volume"):
        LoadTrajectoryd(path)({"image": volume})


KLASS = "malformed files"


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r.update(arguments=[1, 2]), "field 'arguments' must be an object, got list"),
        (lambda r: r.update(arguments={"config": {"chanels": [8]}}), "does not build SliceEncoder"),
        (lambda r: r.update(architecture="slicenav_teleporter"), "unsupported export"),
    ],
)
def test_malformed_records_name_the_field(exported, change, message):
    rewrite(exported, change)
    handled(KLASS, "load_encoder", message, exported.parent, lambda: load_encoder(exported), f"encoder.json.*{message}")


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"poses": [], "actions": [[0, 0, 0, 0, 0, 0, 0]]}', "spatial_size|one pose more"),
        ('{"spatial_size": [16, 16], "poses": [{"center_mm": [0, 0, "x"]}], "actions": []}', "Not a trajectory"),
    ],
    ids=["text", "list", "counts", "field"],
)
def test_render_refuses_a_malformed_trajectory_file(tmp_path, capsys, content, says):
    (tmp_path / "trajectory.json").write_text(content)
    run = lambda: main(["render", "--trajectory", str(tmp_path / "trajectory.json"), "--out", str(tmp_path / "o")])  # noqa: E731
    handled(KLASS, "slicenav render --trajectory", says, tmp_path, run, f"trajectory.json: .*({says})", capsys)


@pytest.mark.parametrize(("content", "says"), [("{name", "not valid JSON"), ('"a string"', "expected a JSON object")])
def test_pack_refuses_malformed_metadata(tokenizer_bundle, tmp_path, capsys, content, says):
    bundle = trained_copy(tokenizer_bundle, tmp_path)
    (bundle / "configs" / "metadata.json").write_text(content)
    run = lambda: main(["pack", str(bundle), "--out", str(tmp_path / "zoo")])  # noqa: E731
    handled(KLASS, "slicenav pack", f"metadata.json {says}", tmp_path, run, f"metadata.json: {says}", capsys)


@pytest.mark.parametrize(
    ("spoil", "says"),
    [
        (lambda m: m["cases"].update(id_regex="(unclosed"), "id_regex"),
        (lambda m: m["cases"].update(glob="/etc/*"), "glob"),
        (lambda m: m.update(files="t1.nii.gz"), "files"),
    ],
    ids=["regex", "absolute_glob", "files_string"],
)
def test_data_check_refuses_malformed_manifest_fields(tmp_path, capsys, spoil, says):
    from ..helpers import REPO

    manifest = json.loads((REPO / "data_manifests" / "ixi.json").read_text())  # a shipped one, then spoilt
    spoil(manifest)
    (tmp_path / "mine.json").write_text(json.dumps(manifest))
    (tmp_path / "root").mkdir()
    run = lambda: main(["data", "check", str(tmp_path / "mine.json"), "--root", str(tmp_path / "root")])  # noqa: E731
    handled(KLASS, "slicenav data check", says, tmp_path, run, f"mine.json.*{says}", capsys)


@pytest.mark.parametrize(("content", "says"), [("{", "not valid JSON"), ('{"encoder": 3}', "field 'encoder'")])
def test_a_malformed_training_record_is_named(tmp_path, content, says):
    from monai_slicenav.workflows import training_record

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "training.json").write_text(content)
    handled(KLASS, "training_record (segmentation inference)", says, tmp_path, lambda: training_record(tmp_path),
            f"training.json: {says}")  # fmt: skip


@pytest.mark.parametrize(
    ("spoil", "says"),
    [
        (lambda r: r["poses"][1].update(rotation=[[1, 0, 0], [0, 1, 0], [0, 0, 0]]), "is not a rotation"),
        (lambda r: r["actions"][0].__setitem__(0, 50.0), "does not lead from pose 0 to pose 1"),
        (lambda r: [p["center_mm"].__setitem__(0, p["center_mm"][0] + 5000.0) for p in r["poses"]], "outside"),
    ],
    ids=["singular_rotation", "inconsistent_action", "outside_the_volume"],
)
def test_dynamics_inference_refuses_a_malformed_trajectory(tmp_path, spoil, says):
    from ..helpers import bundle_workflow, run_workflow
    from ..navigators import trained_stage
    from .inputs import head, save

    stage = trained_stage(tmp_path / "stage", tokenizer_steps=1, dynamics_steps=1)
    scan = save(tmp_path / "head.nii.gz", head())
    main(["render", str(scan), "--steps", "3", "--size", "32", "--out", str(tmp_path / "rendered")])
    record = json.loads((tmp_path / "rendered" / "trajectory.json").read_text())
    spoil(record)
    (tmp_path / "bad.json").write_text(json.dumps(record))
    flow = bundle_workflow("slicenav_dynamics", stage, config="inference.yaml", image=str(scan),
                           trajectory=str(tmp_path / "bad.json"))  # fmt: skip
    handled(KLASS, "slicenav_dynamics inference --trajectory", says, tmp_path, lambda: run_workflow(flow),
            f"bad.json.*{says}")  # fmt: skip


def test_the_dynamics_bundle_refuses_a_tokenizer_dir_of_another_architecture(tokenizer_bundle, tmp_path):
    from ..helpers import TINY_SLICES, bundle_workflow, run_workflow

    export = trained_copy(tokenizer_bundle, tmp_path) / "models" / "encoder"
    record = json.loads((export / "encoder.json").read_text())
    (export / "encoder.json").write_text(json.dumps({**record, "architecture": "slicenav_volume_encoder"}))
    flow = bundle_workflow("slicenav_dynamics", tmp_path / "stage2", **TINY_SLICES, channels=[8, 16, 16],
                           tokenizer_dir=str(export), max_epochs=1)  # fmt: skip
    handled(KLASS, "slicenav_dynamics train", "tokenizer_dir of another architecture", tmp_path,
            lambda: run_workflow(flow), r"encoder\.json: architecture 'slicenav_volume_encoder' is not a slice",
            may_write=("stage2/eval/*", "stage2/models/training.json", "stage2/data/*"))  # fmt: skip


def test_data_check_refuses_a_manifest_that_is_not_text(tmp_path, capsys):
    (tmp_path / "mine.json").write_bytes(b"\xff\xfe{}")
    (tmp_path / "root").mkdir()
    run = lambda: main(["data", "check", str(tmp_path / "mine.json"), "--root", str(tmp_path / "root")])  # noqa: E731
    handled(KLASS, "slicenav data check", "not UTF-8", tmp_path, run, r"mine\.json: not valid JSON", capsys)
