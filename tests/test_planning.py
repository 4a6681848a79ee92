"""Goal-directed navigation by model-predictive control: with the true renderer as the model the planner reaches a
goal three steps of the trained regime away, its actions stay inside the regime's bounds, one seed gives one path,
a bad goal is refused, and a stage-2 model plans from its imagined rollouts alone."""

import pytest
import torch

from monai_slicenav.geometry import Pose, apply_action
from monai_slicenav.networks import SliceNavigator, SliceTokenizer
from monai_slicenav.planning import (
    NavigatorModel,
    RendererModel,
    WarpModel,
    action_bounds,
    plan,
    pose_error,
    render_goal,
)
from monai_slicenav.transforms import RandSliceTrajectory, RandSynthAppearance, SynthLabelEnsemble


@pytest.fixture(scope="module")
def volume():
    paint = RandSynthAppearance(corruption_prob=0.0)
    paint.set_random_state(0)
    return paint(SynthLabelEnsemble(spatial_size=64)(3))


def episode(volume, seed=2):
    """A start and a goal three steps of the pretraining regime apart, and the goal slice."""
    sampler = RandSliceTrajectory(3, 32, start_orientation="random")
    sampler.set_random_state(seed)
    poses, _ = sampler(volume)
    return poses[0], poses[-1], render_goal(volume, poses[-1], 32)


@pytest.fixture(scope="module")
def phantom():
    from monai_slicenav.data.phantom import shepp_logan_volume
    from monai_slicenav.volume import scale_intensity

    return scale_intensity(shepp_logan_volume(64))  # the built-in phantom `slicenav plan` uses without a volume


@pytest.mark.parametrize("head", ["volume", "phantom"])
def test_the_true_renderer_reaches_a_goal_three_steps_away(head, request):
    volume = request.getfixturevalue(head)
    start, goal, image = episode(volume)
    assert pose_error(start, goal)[0] > 15  # the goal is far: 17.9 mm and 7.3 degrees away
    result = plan(volume, start, image, RendererModel(volume, 32), horizon=3, steps=10, samples=256, rounds=6,
                  patience=3, seed=2)  # fmt: skip
    distance, angle = pose_error(result.poses[-1], goal)
    assert distance < 4.0 and angle < 10.0
    assert result.costs[-1] < result.costs[0] and result.model_calls == len(result.actions) * 256 * 6
    assert torch.allclose(result.slices[-1], render_goal(volume, result.poses[-1], 32))  # it rendered what it saw


def test_actions_stay_inside_the_regime_and_one_seed_gives_one_path(volume):
    start, _, image = episode(volume, seed=5)
    runs = [plan(volume, start, image, RendererModel(volume, 32), steps=4, samples=32, rounds=2, seed=1)
            for _ in range(2)]  # fmt: skip
    assert torch.equal(runs[0].actions, runs[1].actions) and runs[0].costs == runs[1].costs
    assert bool((runs[0].actions.abs() <= action_bounds() + 1e-6).all())


def test_a_bad_goal_is_refused(volume):
    start, _, image = episode(volume)
    for goal in (image[0], torch.full_like(image, float("nan"))):
        with pytest.raises(ValueError, match="one finite slice"):
            plan(volume, start, goal, RendererModel(volume, 32))


def test_a_stage_two_model_plans_from_its_imagination_alone(volume, monkeypatch):
    torch.manual_seed(0)
    dynamics = {"grid_size": (8, 8), "max_steps": 6, "patch": 2, "width": 32, "depth": 1, "heads": 2,
                "residual_base": "current"}  # fmt: skip
    navigator = SliceNavigator(SliceTokenizer(channels=(8, 16)), dynamics)
    start, _, image = episode(volume)
    model = NavigatorModel(navigator, context=2)
    renders = []
    original = RendererModel.imagine
    monkeypatch.setattr(RendererModel, "imagine", lambda *a: renders.append(1) or original(*a))
    result = plan(volume, start, image, model, horizon=2, steps=3, samples=16, rounds=2, patience=5, seed=0)
    assert len(result.actions) == 3 and not renders and all(c == c for c in result.costs)
    assert bool((result.actions.abs() <= action_bounds() + 1e-6).all())


class PixelNavigator:
    """A stand-in navigator whose latents are the slices themselves."""

    def eval(self):
        return self

    def tokens(self, slices):
        return slices


def test_the_warp_model_imagines_in_plane_moves_and_is_blind_through_the_plane(volume):
    start, _, _ = episode(volume, seed=4)
    poses = Pose(start.center[None], start.rotation[None], start.spacing[None]).to(dtype=torch.float64)
    seen = render_goal(volume, start, 32)[None]
    in_plane = torch.tensor([[[4.0, -5.0, 0.0, 0.0, 0.0, 0.2, 0.05]] * 2])  # shift, rotation about the normal, zoom
    through = torch.tensor([[[0.0, 0.0, 6.0, 0.0, 0.0, 0.0, 0.0]] * 2])  # two scrolls along the normal
    imagined = WarpModel(PixelNavigator()).imagine(seen, poses, torch.zeros(0, 7), torch.cat([in_plane, through]))
    reached = start.to(dtype=torch.float64)
    for action in in_plane[0].double():
        reached = apply_action(reached, action)
    truth = render_goal(volume, reached, 32)
    inner = (slice(None), slice(8, 24), slice(8, 24))  # away from the border the warp fills with zeros
    warp_error, copy_error = ((image[inner] - truth[inner]).abs().max() for image in (imagined[0], seen[0]))
    assert warp_error < copy_error / 3  # two in-plane moves: what rendering gives, not the slice it started from
    assert torch.equal(imagined[1], seen[0])  # moves through the plane: the slice it started from


def test_slicenav_plan_writes_the_trajectory_strip_and_summary(tmp_path, capsys):
    import json

    from monai_slicenav.cli import main

    main(["render", "--out", str(tmp_path / "walk"), "--steps", "2", "--size", "32", "--seed", "3"])
    goal = tmp_path / "walk" / "trajectory.json"
    main(["plan", "--goal", str(goal), "--out", str(tmp_path / "plan"), "--size", "32", "--steps", "6"])
    summary = json.loads((tmp_path / "plan" / "plan.json").read_text())
    assert summary["model"] == "renderer" and 1 <= summary["steps"] <= 6 and summary["model_calls"] > 0
    assert summary["final_error_mm"] < summary["start_error_mm"]
    record = json.loads((tmp_path / "plan" / "trajectory.json").read_text())
    assert len(record["poses"]) == summary["steps"] + 1 and (tmp_path / "plan" / "plan.png").is_file()
    main(["plan", "--goal", "coronal", "--out", str(tmp_path / "named"), "--size", "32", "--steps", "2"])
    named = json.loads((tmp_path / "named" / "plan.json").read_text())
    assert named["goal"] == "coronal" and named["start_error_mm"] == 0.0  # the start is the centred axial pose
    for bad, message in ((tmp_path / "none.json", "no goal file"), (tmp_path / "walk" / "trajectory.png", "are 32")):
        with pytest.raises(SystemExit) as stopped:
            main(["plan", "--goal", str(bad), "--out", str(tmp_path / "bad"), "--size", "32"])
        assert stopped.value.code == 2 and message in capsys.readouterr().err


def _turn(axis, angle):
    from monai_slicenav.geometry import axis_angle_to_matrix

    return axis_angle_to_matrix(torch.tensor(axis, dtype=torch.float64) * angle)


def test_landmark_planes_follow_the_head_not_the_scanner(volume):
    from monai_slicenav.geometry import canonical_rotation
    from monai_slicenav.planning import LANDMARK_PLANES, acpc_frame, landmark_plane, standard_plane

    ac = torch.tensor([2.0, 5.0, -3.0], dtype=torch.float64)
    aligned = {"AC": ac, "PC": ac + torch.tensor([0.0, -24.0, 0.0]), "IH": ac + torch.tensor([0.0, -10.0, 50.0])}
    torch.testing.assert_close(acpc_frame(aligned), torch.eye(3, dtype=torch.float64))  # Talairach alignment
    tilt = _turn([1.0, 0.0, 0.0], 0.3) @ _turn([0.0, 0.0, 1.0], -0.2)  # a head pitched and turned in the scanner
    tilted = {name: ac + tilt @ (torch.as_tensor(p, dtype=torch.float64) - ac) for name, p in aligned.items()}
    torch.testing.assert_close(acpc_frame(tilted), tilt)
    for name, canonical in LANDMARK_PLANES.items():
        pose = landmark_plane(volume, name, tilted, 32)
        torch.testing.assert_close(pose.rotation, tilt @ canonical_rotation(canonical, dtype=torch.float64))
        torch.testing.assert_close(pose.center, ac)
        assert float(pose.spacing) == float(standard_plane(volume, canonical, 32).spacing)
    # the AC-PC axial plane holds both commissures; the mid-sagittal one all three landmarks
    for name, names in (("acpc-axial", ("AC", "PC")), ("midsagittal", ("AC", "PC", "IH"))):
        plane = landmark_plane(volume, name, tilted, 32)
        normal = plane.rotation[:, 2]
        assert all(abs(float(normal @ (tilted[n] - plane.center))) < 1e-9 for n in names)


@pytest.mark.parametrize(
    "landmarks, message",
    [
        ({"AC": [0, 0, 0], "PC": [0, -24, 0]}, "lack IH"),
        ({"AC": [0, 0, 0], "PC": [0, 0, 0.5], "IH": [0, 0, 50]}, "less than 1 mm"),
        ({"AC": [0, 0, 0], "PC": [0, -24, 0], "IH": [0, 30, 0]}, "IH lies on the AC-PC line"),
        ({"AC": [0, float("nan"), 0], "PC": [0, -24, 0], "IH": [0, 0, 50]}, "AC must be 3 finite"),
        ({"AC": [0, 0], "PC": [0, -24, 0], "IH": [0, 0, 50]}, "AC must be 3 finite"),
        ({"AC": [0, 0, 0], "PC": "behind", "IH": [0, 0, 50]}, "PC must be 3 finite"),
        ({"AC": [0, 0, 0], "PC": [0, -24, 0], "IH": [[0], [0, 50]]}, "IH must be 3 finite"),
    ],
)
def test_bad_landmarks_are_named(landmarks, message):
    from monai_slicenav.planning import acpc_frame

    with pytest.raises(ValueError, match=message):
        acpc_frame(landmarks)


def test_slicenav_plan_to_a_landmark_plane(tmp_path, capsys):
    import json

    from monai_slicenav.cli import main

    landmarks = tmp_path / "landmarks.json"
    landmarks.write_text(json.dumps({"AC": [0, 8, -4], "PC": [0, -16, 0], "IH": [0, -5, 45]}))
    main(["plan", "--goal", "acpc-axial", "--landmarks", str(landmarks), "--out", str(tmp_path / "acpc"),
          "--size", "32", "--steps", "6"])  # fmt: skip
    summary = json.loads((tmp_path / "acpc" / "plan.json").read_text())
    assert summary["goal"] == "acpc-axial" and summary["final_error_mm"] < summary["start_error_mm"]
    landmarks.write_text(json.dumps({"AC": [0, 8, -4], "PC": [0, 8, -4], "IH": [0, -5, 45]}))
    refusals = (([], "needs --landmarks"), (["--landmarks", str(landmarks)], "landmarks.json: landmarks AC"))
    for extra, message in refusals:
        with pytest.raises(SystemExit) as stopped:
            main(["plan", "--goal", "midsagittal", *extra, "--out", str(tmp_path / "bad"), "--size", "32"])
        assert stopped.value.code == 2 and message in capsys.readouterr().err


def test_named_plane_resolves_standard_and_landmark_planes(volume):
    from monai_slicenav.planning import landmark_plane, named_plane, standard_plane

    marks = {"AC": [1.0, 4.0, -2.0], "PC": [1.0, -20.0, 0.0], "IH": [2.0, -8.0, 45.0]}
    for name, expected in (("coronal", standard_plane(volume, "coronal", 32)),
                           ("midsagittal", landmark_plane(volume, "midsagittal", marks, 32))):  # fmt: skip
        got = named_plane(volume, name, 32, marks)
        assert torch.equal(got.as_tensor(), expected.as_tensor())
    with pytest.raises(ValueError, match=r"landmarks\); the named planes are axial, coronal, sagittal\."):
        named_plane(volume, "acpc-axial", 32)
    with pytest.raises(ValueError, match="unknown plane 'oblique'; the named planes are .*midsagittal"):
        named_plane(volume, "oblique", 32, marks)
