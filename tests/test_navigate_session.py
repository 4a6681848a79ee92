"""The navigation session behind `slicenav navigate`, without a browser: moves are the regime's steps and undo each
other, the shown slice is the renderer's, reset forgets, bad names are refused, and the CLI checks its options."""

import pytest
import torch

from monai_slicenav.cli import main
from monai_slicenav.geometry import relative
from monai_slicenav.viewer import COMMANDS, MOVES, make_server, open_session
from monai_slicenav.viewer.session import STEP_FRACTION

from .navigators import trained_stage


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    return trained_stage(tmp_path_factory.mktemp("stage"), tokenizer_steps=5, dynamics_steps=5)


def test_each_move_is_one_component_of_the_regimes_step_and_its_opposite_undoes_it(stage):
    session = open_session(None, stage)
    navigation = {"max_translation": 12.0, "max_rotation": 0.35, "max_log_zoom": 0.15}  # the bundle's defaults
    start_slice = session.truth.clone()
    for name, (component, sign, _) in MOVES.items():
        before = session.poses[-1]
        session.act(name)
        moved = relative(before, session.poses[-1])
        largest = navigation[("max_translation", "max_rotation", "max_log_zoom")[min(component // 3, 2)]]
        expected = torch.zeros(7, dtype=torch.float64)
        expected[component] = sign * STEP_FRACTION * largest
        torch.testing.assert_close(moved, expected, atol=1e-9, rtol=0)
    session.act("reset")
    for name in ("scroll_forward", "tilt_up", "rotate_ccw", "zoom_in", "move_right"):
        session.act(name)
    for name in ("move_left", "zoom_out", "rotate_cw", "tilt_down", "scroll_back"):
        session.act(name)
    torch.testing.assert_close(session.poses[-1].center, session.start.center, atol=1e-9, rtol=0)
    assert torch.allclose(session.truth, start_slice, atol=1e-5)


def test_reset_forgets_and_unknown_names_are_refused(stage):
    session = open_session(None, stage)
    view = session.act("scroll_forward")
    assert view["step"] == 1 and view["psnr"] is not None and set(view["images"]) >= {"true", "predicted", "axial"}
    session.act("imagine")
    view = session.act("reset")
    assert view["step"] == 0 and not view["imagine"] and len(session.trajectory()["poses"]) == 1
    assert "predicted" not in view["images"]
    with pytest.raises(ValueError, match="unknown action 'jump'"):
        session.act("jump")
    assert set(COMMANDS) == {"reset", "imagine", "shuffle"}


def test_the_cli_checks_its_options_before_serving(stage, capsys, tmp_path):
    for args, says in (
        (["navigate"], "--model is required"),
        (["navigate", "--model", str(tmp_path)], "not a trained dynamics stage"),
        (["navigate", "--model", str(stage), "--port", "70000"], "--port must be an integer"),
        (["navigate", "--model", str(stage), "--host", "localhost"], "--host must be an IPv4 address"),
        (["navigate", str(tmp_path / "missing.nii.gz"), "--model", str(stage)], "missing.nii.gz: no such file"),
    ):
        with pytest.raises(SystemExit) as stopped:
            main(args)
        assert stopped.value.code == 2 and says in capsys.readouterr().err


def test_serving_elsewhere_than_this_machine_warns(stage, caplog):
    server = make_server(open_session(None, stage), "0.0.0.0", 0)
    server.server_close()
    assert "anyone who can reach this address" in caplog.text


def test_the_readme_command_is_one_the_cli_takes():
    import re
    import shlex

    from monai_slicenav.cli import _check_options

    from .helpers import REPO

    section = (REPO / "docs" / "navigate.md").read_text()
    (command,) = re.findall(r"```bash\n(slicenav navigate .*?)\n```", section)
    _check_options(shlex.split(command)[1:])  # raises for an option the command does not have
    assert (REPO / "bundles" / "slicenav_dynamics" / "docs" / "navigate.png").is_file()


def test_go_to_plans_to_a_named_plane_and_executes_the_plan(stage):
    """ "Go to" plans from the current pose to a named plane and executes the plan: each executed step is a view and
    a step of the saved trajectory, inside the regime's bounds; the reported error is the final pose's distance to
    the plane's pose; the same seed gives the same path; the world model plans without the renderer; bad names are
    refused. (How often planning succeeds is bench/planning.py's question, not this test's.)"""
    from monai_slicenav.planning import action_bounds, pose_error, standard_plane

    def tilted() -> object:
        session = open_session(None, stage)
        for name in ("tilt_up", "scroll_forward", "move_right"):
            session.act(name)
        return session

    session = tilted()
    answer = session.goto("axial", planner="renderer")
    goal = standard_plane(session.scan, "axial", session.size[0])
    distance, angle = pose_error(session.poses[-1], goal)
    assert answer["error"] == {"distance_mm": distance, "angle_deg": angle}
    assert answer["final_pose"] == session.pose_record() and answer["goal_pose"]["center_mm"] == goal.center.tolist()
    frames = answer["frames"]
    assert 1 <= len(frames) <= 10 and frames[-1] == session.view() and frames[0]["action_text"].startswith("planned")
    taken = torch.stack(session.actions[3:])
    assert len(taken) == len(frames) == len(session.trajectory()["actions"]) - 3
    assert bool((taken.abs().float() <= action_bounds() + 1e-6).all())
    assert tilted().goto("axial", planner="renderer")["final_pose"] == answer["final_pose"]  # seeded: one path
    assert tilted().goto("sagittal")["frames"]  # the world model plans too
    with pytest.raises(ValueError, match="unknown plane 'oblique'"):
        session.goto("oblique")
    with pytest.raises(ValueError, match="unknown planner 'oracle'"):
        session.goto("axial", planner="oracle")


def test_go_to_a_plane_through_the_commissures_needs_the_heads_landmarks(stage, tmp_path):
    """Given the head's landmarks, "go to" also offers the planes through the commissures and plans to them; without
    them those planes are refused, and bad landmarks fail when the session opens, naming the file."""
    import json

    from monai_slicenav.planning import LANDMARK_PLANES, STANDARD_PLANES, landmark_plane, pose_error

    centre = open_session(None, stage).start.center.tolist()
    marks = {"AC": [centre[0], centre[1] + 10, centre[2]], "PC": [centre[0], centre[1] - 14, centre[2] + 3],
             "IH": [centre[0] + 1, centre[1] - 5, centre[2] + 40]}  # fmt: skip
    path = tmp_path / "landmarks.json"
    path.write_text(json.dumps(marks))
    session = open_session(None, stage, landmarks=path)
    assert session.planes == (*STANDARD_PLANES, *LANDMARK_PLANES) and session.view()["planes"] == list(session.planes)
    goal = landmark_plane(session.scan, "acpc-axial", marks, session.size[0])
    answer = session.goto("acpc-axial", planner="renderer")
    assert answer["goal_pose"] == session.pose_record(goal) and answer["frames"]  # planned to it, and moved
    distance, angle = pose_error(session.poses[-1], goal)
    assert answer["error"] == {"distance_mm": distance, "angle_deg": angle}
    plain = open_session(None, stage)
    assert "midsagittal" not in plain.planes
    with pytest.raises(ValueError, match="need the head's landmarks"):
        plain.goto("midsagittal")
    path.write_text(json.dumps({**marks, "IH": marks["AC"]}))
    with pytest.raises(ValueError, match="landmarks.json: landmark IH lies on the AC-PC line"):
        open_session(None, stage, landmarks=path)
