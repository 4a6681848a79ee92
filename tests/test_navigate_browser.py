"""`slicenav navigate` in a real browser: headless Chromium opens the page served on 127.0.0.1, presses keys, and
reads back what the page drew. The true slice equals the renderer's at the pose the page reports, the predicted
slice equals the model's decoded prediction for that context and action, true actions predict better than wrong
ones for a model that uses its actions, and the saved trajectory renders again with `slicenav render` (bad
requests: tests/reliability/test_security.py), and "go to" plays the path the planner took to a named plane.
Screenshots go to ``test-artifacts/``
(or ``$SLICENAV_TEST_ARTIFACTS``)."""

import json
import os
import shutil
import threading
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from monai_slicenav.cli import main
from monai_slicenav.geometry import Pose
from monai_slicenav.io import load_volume
from monai_slicenav.networks import predict_next
from monai_slicenav.transforms import EmbeddedVolumed, render_slices, replay
from monai_slicenav.viewer import make_server, open_session

from .helpers import REPO
from .navigators import SYNTH_SIZE, trained_stage

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install '.[test]')")
Keys = pytest.importorskip("selenium.webdriver.common.keys").Keys
CHROMIUM, DRIVER = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="no headless browser here (Debian: apt-get install chromium chromium-driver)",
)
ARTIFACTS = Path(os.environ.get("SLICENAV_TEST_ARTIFACTS", REPO / "test-artifacts"))
PIXEL = 1 / 255 + 1e-6  # what an 8-bit PNG drawn on a canvas can change
POSE_FIELDS = ("center_mm", "rotation", "spacing_mm")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A server on a synthetic volume of the training distribution (one the model never saw) with a small trained
    model, serving from a thread."""
    root = tmp_path_factory.mktemp("navigate")
    stage = trained_stage(root / "stage")
    item = {"source": "synthetic", "synth_seed": 12345, "name": "unseen"}
    image = EmbeddedVolumed(synth_options={"spatial_size": SYNTH_SIZE}).set_random_state(7)(item)["image"]
    path = root / "unseen.nii.gz"
    nib.save(nib.Nifti1Image(image[0].numpy(), image.affine.numpy()), str(path))
    centre = open_session(path, stage).start.center.tolist()  # landmarks near the head's centre: "go to" offers more
    landmarks = root / "landmarks.json"
    landmarks.write_text(json.dumps({"AC": centre, "PC": [centre[0], centre[1] - 20, centre[2]],
                                     "IH": [centre[0], centre[1] - 8, centre[2] + 30]}))  # fmt: skip
    server = make_server(open_session(path, stage, landmarks=landmarks))
    server.stage = stage  # for a replica session
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, path
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=options)
    yield driver
    driver.quit()


def press(browser, keys: str | list[str]) -> dict:
    """Press each key on the page and wait until it has drawn the answer; the last state the page received."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import WebDriverWait

    for key in keys:
        before = browser.execute_script("return Number(document.body.dataset.updates || 0)")
        ActionChains(browser).send_keys(key).perform()
        WebDriverWait(browser, 30).until(
            lambda b, n=before: b.execute_script("return Number(document.body.dataset.updates || 0)") > n
        )
    return browser.execute_script("return window.slicenavState")


def canvas(browser, name: str) -> np.ndarray:
    """The red channel of canvas ``name`` as shown, in [0, 1] (grey images: all channels equal)."""
    width, height, data = browser.execute_script(
        "const c = document.getElementById(arguments[0]);"
        "return [c.width, c.height, Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)];",
        name,
    )
    return np.asarray(data, dtype=np.float64).reshape(height, width, 4)[..., 0] / 255


def open_page(browser, server) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server.url)
    WebDriverWait(browser, 30).until(lambda b: b.execute_script("return window.slicenavState !== undefined"))
    press(browser, ["r"])


def screenshot(browser, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / name))


def test_the_page_shows_the_rendered_slice_and_the_models_prediction(served, browser):
    server, path = served
    open_page(browser, server)
    state = press(browser, ["w", "w", "q", "t", Keys.ARROW_LEFT, "+", "h"])
    assert state["step"] == 7 and state["action"] == "tilt_right" and not state["imagine"]
    screenshot(browser, "navigate.png")

    volume = load_volume(path)
    from monai.transforms import ScaleIntensityRangePercentiles

    scaled = ScaleIntensityRangePercentiles(0.5, 99.5, b_min=0.0, b_max=1.0, clip=True)(volume)
    pose = state["pose"]
    here = Pose(
        torch.tensor(pose["center_mm"], dtype=torch.float64)[None, None],
        torch.tensor(pose["rotation"], dtype=torch.float64)[None, None],
        torch.tensor([[pose["spacing_mm"]]], dtype=torch.float64),
    )
    truth = render_slices(scaled.as_tensor()[None].float(), scaled.affine, here, state["slice_size"])[0, 0, 0]
    assert np.abs(canvas(browser, "true") - truth.numpy()).max() <= PIXEL

    # the prediction, recomputed from the saved trajectory: the true slices of the context, the actions after them
    record = server.session.trajectory()  # read in double precision, as the session chains its poses
    poses = Pose(*(torch.tensor([p[k] for p in record["poses"]], dtype=torch.float64) for k in POSE_FIELDS))
    actions = torch.tensor(record["actions"]).float()
    navigator, context = server.session.navigator, server.session.context
    slices = render_slices(scaled.as_tensor()[None].float(), scaled.affine, poses[None], state["slice_size"])[0]
    tokens = navigator.tokens(slices[None])  # (1, T + 1, d, h', w')
    expected_tokens = predict_next(
        navigator,
        tokens[:, -1 - context : -1],
        actions[None, -context:],
        slices[-2][None],
        poses.spacing[-2:-1].float(),
    )
    expected = navigator.tokenizer.decode(expected_tokens[0]).clamp(0, 1)[0, 0]
    assert np.abs(canvas(browser, "predicted") - expected.detach().numpy()).max() <= PIXEL + 1e-4
    assert state["psnr"] == pytest.approx(float(10 * torch.log10(1 / ((expected - truth) ** 2).mean())), abs=1e-3)


def test_true_actions_predict_better_than_wrong_ones(served, browser):
    server, _ = served
    open_page(browser, server)
    keys = ["w", "t", "w", "e", "s", "g", Keys.ARROW_RIGHT, "w", "q", "-", "w", "f"]
    true_actions = [p["psnr"] for p in press(browser, keys)["psnr_history"]]
    press(browser, ["r", "x"])
    state = press(browser, keys)
    wrong_actions = [p["psnr"] for p in state["psnr_history"]]
    assert state["shuffled"] and "the model was told" in state["action_text"]
    screenshot(browser, "navigate_wrong_actions.png")
    assert len(true_actions) == len(wrong_actions) == len(keys)
    assert np.mean(true_actions) > np.mean(wrong_actions) + 0.1


def test_imagination_goes_on_from_the_models_own_predictions(served, browser):
    server, _ = served
    open_page(browser, server)
    press(browser, ["w", "w"])
    state = press(browser, [" ", "w", "w", "w"])
    assert state["imagine"] and [p["imagined"] for p in state["psnr_history"]] == [False, False, True, True, True]
    screenshot(browser, "navigate_imagining.png")
    expected = server.session.navigator.tokenizer.decode(server.session.tokens[-1][None]).clamp(0, 1)[0, 0]
    assert np.abs(canvas(browser, "predicted") - expected.detach().numpy()).max() <= PIXEL + 1e-4


def test_the_saved_trajectory_renders_again_with_slicenav_render(served, browser, tmp_path):
    server, path = served
    open_page(browser, server)
    press(browser, ["w", "q", "t", "+", "s"])
    shown = canvas(browser, "true")
    with urllib.request.urlopen(server.url + "api/trajectory") as answer:
        assert "attachment" in answer.headers["Content-Disposition"]
        (tmp_path / "trajectory.json").write_bytes(answer.read())
    main(["render", str(path), "--trajectory", str(tmp_path / "trajectory.json"), "--out", str(tmp_path / "again")])
    rendered = json.loads((tmp_path / "again" / "trajectory.json").read_text())
    saved = json.loads((tmp_path / "trajectory.json").read_text())
    assert len(saved["poses"]) == len(rendered["poses"]) == 6 and rendered["replayed"].endswith("trajectory.json")
    for key in POSE_FIELDS:  # the same poses, to float32 rounding
        again, first = ([p[key] for p in record["poses"]] for record in (rendered, saved))
        assert np.allclose(again, first, rtol=0, atol=1e-5)
    from monai.transforms import ScaleIntensityRangePercentiles

    scaled = ScaleIntensityRangePercentiles(0.5, 99.5, b_min=0.0, b_max=1.0, clip=True)(load_volume(path))
    run, _ = replay(scaled, saved)
    assert np.abs(shown - run.slices[-1, 0].numpy()).max() <= PIXEL + 1e-4


def test_go_to_plays_the_planned_path_and_reports_the_planners_final_pose(served, browser):
    """Choosing a plane and a planner and pressing Go plans on the server, plays every executed step, and leaves
    the page at the pose the planner reaches from the same start (a separate session, the same seed). The tinted
    plane lets the anatomy of the view it lies in show (navigate_goto.png)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    server, path = served
    open_page(browser, server)
    press(browser, ["t", "w"])
    before = browser.execute_script("return Number(document.body.dataset.updates || 0)")
    planes = Select(browser.find_element(By.ID, "plane"))
    assert [o.get_attribute("value") for o in planes.options] == list(server.session.planes)  # the landmark planes too
    assert "acpc-axial" in server.session.planes
    planes.select_by_value("coronal")
    Select(browser.find_element(By.ID, "planner")).select_by_value("renderer")
    browser.find_element(By.ID, "goto").click()
    WebDriverWait(browser, 120).until(lambda b: b.execute_script("return Number(document.body.dataset.gotos || 0)"))
    answer = browser.execute_script("return window.slicenavGoto")
    state = browser.execute_script("return window.slicenavState")
    shown = browser.execute_script("return Number(document.body.dataset.updates)") - before
    assert shown == len(answer["frames"]) and state["pose"] == answer["final_pose"]
    assert "from the coronal plane" in browser.find_element(By.ID, "goto-result").text
    screenshot(browser, "navigate_goto.png")
    replica = open_session(path, server.stage)
    for name in ("tilt_up", "scroll_forward"):
        replica.act(name)
    assert replica.goto("coronal", planner="renderer")["final_pose"] == answer["final_pose"]
