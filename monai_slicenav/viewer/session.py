"""One interactive navigation through a volume with a trained stage-2 model: every move renders the true slice at
the new pose and the model's prediction of it, from the last true slices (or, imagining, its own predictions) and
the action just taken."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Mapping

import numpy as np
import torch

from ..data import shepp_logan_volume
from ..encoders.trained import recorded_navigation, trained_navigator
from ..geometry import CANONICAL_ORIENTATIONS, Pose, apply_action, as_slice_size, canonical_rotation, slice_points
from ..io import load_volume, png_bytes
from ..networks import SliceNavigator, predict_next
from ..planning import (
    SEARCH,
    NavigatorModel,
    RendererModel,
    acpc_frame,
    named_plane,
    plan,
    plane_names,
    pose_error,
    read_landmarks,
    render_goal,
)
from ..transforms import ACTION_FIELDS, RandSliceTrajectory, render_slices, trajectory_to_dict
from ..volume import scale_intensity
from ..workflows.controllability import slice_psnr

__all__ = ["MOVES", "COMMANDS", "PLANNERS", "NavigationSession", "open_session"]

# move name -> (action component, sign, what it does); the step is a fraction of the trained regime's largest step
MOVES: dict[str, tuple[int, float, str]] = {
    "scroll_forward": (2, 1.0, "scrolled forward along the normal"),
    "scroll_back": (2, -1.0, "scrolled back along the normal"),
    "move_right": (0, 1.0, "moved right in the plane"),
    "move_left": (0, -1.0, "moved left in the plane"),
    "move_down": (1, 1.0, "moved down in the plane"),
    "move_up": (1, -1.0, "moved up in the plane"),
    "tilt_up": (3, 1.0, "tilted up (about the column direction)"),
    "tilt_down": (3, -1.0, "tilted down (about the column direction)"),
    "tilt_left": (4, -1.0, "tilted left (about the row direction)"),
    "tilt_right": (4, 1.0, "tilted right (about the row direction)"),
    "rotate_ccw": (5, -1.0, "rotated counter-clockwise in the plane"),
    "rotate_cw": (5, 1.0, "rotated clockwise in the plane"),
    "zoom_in": (6, -1.0, "zoomed in (smaller pixels)"),
    "zoom_out": (6, 1.0, "zoomed out (larger pixels)"),
}
COMMANDS = ("reset", "imagine", "shuffle")  # not moves: back to the start, toggle open loop, toggle wrong actions
PLANNERS = ("model", "renderer")  # what "go to" plans with: the session's world model, or the true renderer
GOTO_STEPS = 10  # most planned steps a "go to" executes
RENDERER_PLAN_SIZE = 64  # pixels of the slices the true renderer plans with (at the session's pixel size)
STEP_FRACTION = 0.5  # one key press moves half the trained regime's largest step
MAX_RECORDED_STEPS = 4096  # the trajectory kept for saving stops growing here (bounded memory per session)
PSNR_HISTORY = 256  # points of the live PSNR plot
ORTHO_SIZE = 96  # pixels of the three orthogonal overview images


def _data_url(pixels: np.ndarray | torch.Tensor) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(pixels)).decode("ascii")


class NavigationSession:
    """A navigation through one volume with one trained navigator, driven one named action at a time.

    Args:
        volume: (1, X, Y, Z) image in [0, 1] with its affine (a MONAI ``MetaTensor``), as ``slicenav render``
            scales it (0.5th-99.5th percentile, clipped).
        navigator: the trained stage-2 model, in eval mode.
        navigation: the regime it was trained with (``recorded_navigation``): slice size, context length
            (``num_steps``) and the largest step of each kind.
        image_name: what the saved trajectory names as its image.
        threshold: foreground threshold that places the start pose (the centre of the foreground box).
        seed: seeds the wrong actions of the shuffled mode.
        landmarks: the head's landmarks (``planning.LANDMARKS`` in world mm): "go to" then also offers the planes
            through the commissures (``planning.LANDMARK_PLANES``).
    """

    def __init__(
        self,
        volume: torch.Tensor,
        navigator: SliceNavigator,
        navigation: Mapping,
        image_name: str,
        threshold: float = 0.05,
        seed: int = 0,
        landmarks: Mapping | None = None,
    ) -> None:
        if landmarks is not None:
            acpc_frame(landmarks)  # bad landmarks fail here, not at the first "go to"
        self.landmarks = landmarks
        self.planes = plane_names(landmarks is not None)  # "go to" goals
        self.navigator = navigator.eval()
        self.size = as_slice_size(navigation["spatial_size"])
        self.context = max(1, min(int(navigation["num_steps"]), navigator.dynamics.config.max_steps - 1))
        largest = [float(navigation[k]) for k in ("max_translation", "max_rotation", "max_log_zoom")]
        self.step_sizes = STEP_FRACTION * torch.tensor(
            [largest[0]] * 3 + [largest[1]] * 3 + [largest[2]], dtype=torch.float64
        )
        self.image_name = image_name
        self.scan, self.threshold, self.seed = volume, threshold, seed  # "go to" plans and renders on it
        self.affine = torch.as_tensor(volume.affine, dtype=torch.float64)
        self.volume = torch.as_tensor(volume).float()[None].contiguous()  # (1, 1, X, Y, Z)
        sampler = RandSliceTrajectory(1, self.size, threshold=threshold)
        frame = sampler.frame(volume)
        self.start = sampler.centred_pose(frame, "axial", dtype=torch.float64)  # poses chain in double precision
        extent = (frame[2] - frame[1] + 1) * np.linalg.norm(frame[0][:3, :3], axis=0)
        self.ortho_spacing = float(extent.max()) / ORTHO_SIZE
        self.generator = torch.Generator().manual_seed(seed)
        self.reset()

    # ---- state ----
    def reset(self) -> None:
        """Back to the start pose, with no history, closed loop and true actions."""
        self.poses = [self.start]
        self.actions: list[torch.Tensor] = []
        self.fed: list[torch.Tensor] = []  # the actions the model was given (wrong ones in the shuffled mode)
        self.truth = self.render(self.start)
        self.tokens = [self.navigator.tokens(self.truth[None, None])[0, 0]]
        self.imagine, self.shuffled = False, False
        self.prediction: torch.Tensor | None = None
        self.history: list[dict] = []
        self.last = {"action": None, "text": "start", "psnr": None, "timing_ms": {}}

    def act(self, name: str) -> dict:
        """Apply a move of :data:`MOVES` or a command of :data:`COMMANDS` and return the new :meth:`view`.

        Raises:
            ValueError: for an unknown name (the known ones are listed).
        """
        if name == "reset":
            self.reset()
        elif name == "imagine":
            self.imagine = not self.imagine
        elif name == "shuffle":
            self.shuffled = not self.shuffled
        elif name in MOVES:
            self._move(name)
        else:
            raise ValueError(f"unknown action {name!r}; expected one of {sorted(MOVES) + list(COMMANDS)}.")
        return self.view()

    def action_of(self, name: str) -> torch.Tensor:
        """The (7,) action a move applies: one component, a fraction of the trained regime's largest step."""
        component, sign, _ = MOVES[name]
        action = torch.zeros(len(ACTION_FIELDS), dtype=torch.float64)
        action[component] = sign * self.step_sizes[component]
        return action

    def _move(self, name: str) -> None:
        fed_name = name
        if self.shuffled:  # another move's action, never the one taken
            others = [m for m in MOVES if m != name]
            fed_name = others[int(torch.randint(len(others), (1,), generator=self.generator))]
        words = MOVES[name][2] + ("" if fed_name == name else f" (the model was told: {MOVES[fed_name][2]})")
        self._step(self.action_of(name), self.action_of(fed_name).float(), name, words)

    def goto(self, plane: str, planner: str = "model") -> dict:
        """Plan from the current pose to the named ``plane`` (one of :attr:`planes`) with ``planner``
        (:data:`PLANNERS`: the session's world model, imagining from the slices seen, or the true renderer) and
        execute the plan, each step rendered and predicted as a key press is.

        Returns:
            ``frames`` (the :meth:`view` after each executed step), ``goal_pose``, ``final_pose`` and ``error``
            (distance in mm between the slice centres, angle in degrees between the normals).

        Raises:
            ValueError: for an unknown plane or planner.
        """
        if planner not in PLANNERS:
            raise ValueError(f"unknown planner {planner!r}; expected one of {', '.join(PLANNERS)}.")
        goal_pose = named_plane(self.scan, plane, self.size[0], self.landmarks, self.threshold)
        if planner == "model":  # the model's own slices
            size, world = self.size[0], NavigatorModel(self.navigator, self.context)
        else:  # the renderer sees more of the head than a small model's slices: a wider basin
            size = max(self.size[0], RENDERER_PLAN_SIZE)
            world = RendererModel(self.scan, size)
        goal = render_goal(self.scan, goal_pose, size)
        search = SEARCH["model" if planner == "model" else "renderer"]
        result = plan(self.scan, self.poses[-1], goal, world, steps=GOTO_STEPS, seed=self.seed, **search)
        frames = []
        for k, action in enumerate(result.actions):
            self._step(
                action.double(),
                action.float(),
                None,
                f"planned step {k + 1} of {len(result.actions)} to the {plane} plane",
            )
            frames.append(self.view())
        distance, angle = pose_error(self.poses[-1], goal_pose)
        return {"frames": frames, "goal_pose": self.pose_record(goal_pose), "final_pose": self.pose_record(),
                "error": {"distance_mm": distance, "angle_deg": angle}}  # fmt: skip

    def _step(self, action: torch.Tensor, fed: torch.Tensor, name: str | None, words: str) -> None:
        """Take ``action`` (7,) on the volume, telling the model ``fed``; ``name`` (a move, or None for a planned
        step) and ``words`` describe it."""
        started = time.perf_counter()
        here = self.poses[-1]
        left = None if self.imagine else self.truth[None]  # the slice the move leaves (imagined: decoded)
        pose = apply_action(here, action)
        self.truth = self.render(pose)
        rendered = time.perf_counter()
        context = torch.stack(self.tokens[-self.context :])[None]
        given = torch.stack([*self.fed[len(self.fed) - context.shape[1] + 1 :], fed])[None]
        predicted_tokens = predict_next(self.navigator, context, given, left, here.spacing.float()[None])
        with torch.no_grad():
            self.prediction = self.navigator.tokenizer.decode(predicted_tokens[0]).clamp(0.0, 1.0)[0]
        predicted = time.perf_counter()
        true_tokens = self.navigator.tokens(self.truth[None, None])[0, 0]
        encoded = time.perf_counter()
        self.tokens = [*self.tokens[-self.context :], predicted_tokens[0, 0] if self.imagine else true_tokens]
        self.fed = [*self.fed[-self.context :], fed]
        if len(self.actions) < MAX_RECORDED_STEPS:
            self.poses.append(pose)
            self.actions.append(action)
        else:
            self.poses[-1] = pose  # the recording is full: the view goes on, the saved trajectory does not grow
        score = float(slice_psnr(self.prediction, self.truth))
        self.history = [*self.history[-(PSNR_HISTORY - 1) :], {"psnr": score, "imagined": self.imagine}]
        self.last = {
            "action": name,
            "text": words,
            "psnr": score,
            "timing_ms": {
                "render": 1000 * (rendered - started),
                "predict": 1000 * (predicted - rendered),
                "encode": 1000 * (encoded - predicted),
            },
        }

    # ---- rendering ----
    def render(self, pose: Pose) -> torch.Tensor:
        """The (1, h, w) true slice at ``pose``: the project's renderer, one ``grid_sample`` call."""
        poses = Pose(pose.center[None, None], pose.rotation[None, None], pose.spacing[None, None])
        return render_slices(self.volume, self.affine, poses, self.size)[0, 0]

    def orthogonal_views(self) -> dict[str, np.ndarray]:
        """Axial, coronal and sagittal views through the current slice centre (RGB, (S, S, 3)), where the current
        slice plane cuts them tinted red (translucent, so that a view lying in the plane still shows its anatomy)."""
        pose = self.poses[-1]
        names = list(CANONICAL_ORIENTATIONS)
        rotation = torch.stack([canonical_rotation(n, dtype=torch.float64) for n in names])
        views = Pose(pose.center.expand(3, 3), rotation, torch.full((3,), self.ortho_spacing, dtype=torch.float64))
        images = render_slices(self.volume, self.affine, views[None], ORTHO_SIZE)[0, :, 0]  # (3, S, S)
        offset = slice_points(views, ORTHO_SIZE) - pose.center  # (3, S, S, 3)
        along = offset @ pose.rotation  # coordinates on the slice's u, v, n axes
        half = torch.tensor([self.size[1], self.size[0]], dtype=torch.float64) * pose.spacing / 2
        cut = (along[..., 2].abs() <= 0.75 * self.ortho_spacing) & (along[..., :2].abs() <= half).all(dim=-1)
        rgb = images[..., None].repeat(1, 1, 1, 3).clamp(0.0, 1.0)
        rgb[cut] = 0.55 * rgb[cut] + 0.45 * torch.tensor([1.0, 0.15, 0.15])  # translucent: the anatomy shows
        return {name: rgb[i].numpy() for i, name in enumerate(names)}

    # ---- output ----
    def pose_record(self, pose: Pose | None = None) -> dict:
        """``pose`` (default: the current one) as JSON: centre (mm), rotation, pixel spacing (mm)."""
        pose = self.poses[-1] if pose is None else pose
        return {
            "center_mm": pose.center.tolist(),
            "rotation": pose.rotation.tolist(),
            "spacing_mm": float(pose.spacing),
        }

    def view(self) -> dict:
        """What the page shows: the true slice, the prediction and their absolute difference as PNG data URLs,
        the orthogonal views, the pose and the last action in words, the PSNR and its recent history."""
        pose = self.poses[-1]
        images = {"true": _data_url(self.truth[0])}
        if self.prediction is not None:
            images["predicted"] = _data_url(self.prediction[0])
            images["difference"] = _data_url((self.prediction[0] - self.truth[0]).abs())
        images.update({name: _data_url(rgb) for name, rgb in self.orthogonal_views().items()})
        normal = pose.rotation[:, 2]
        last = self.last
        return {
            "step": len(self.history),
            "pose": self.pose_record(),
            "pose_text": (
                f"centre ({', '.join(f'{c:.1f}' for c in pose.center.tolist())}) mm, normal "
                f"({', '.join(f'{c:.2f}' for c in normal.tolist())}), pixel {float(pose.spacing):.2f} mm"
            ),
            "action": last["action"],
            "action_text": last["text"],
            "imagine": self.imagine,
            "shuffled": self.shuffled,
            "psnr": last["psnr"],
            "psnr_history": self.history,
            "timing_ms": last["timing_ms"],
            "slice_size": list(self.size),
            "planes": list(self.planes),
            "images": images,
        }

    def trajectory(self) -> dict:
        """The navigated trajectory since the last reset in the project's trajectory JSON (``slicenav render
        --trajectory`` re-renders it)."""
        poses = Pose(
            torch.stack([p.center for p in self.poses]),
            torch.stack([p.rotation for p in self.poses]),
            torch.stack([p.spacing for p in self.poses]),
        )
        actions = torch.stack(self.actions) if self.actions else torch.zeros(0, len(ACTION_FIELDS), dtype=torch.float64)
        return trajectory_to_dict(
            poses,
            actions,
            self.size,
            image=self.image_name,
            affine=self.affine.tolist(),
            intensity_scaling="percentiles 0.5-99.5 -> [0, 1], clipped",
            source="slicenav navigate",
        )


def open_session(
    image: str | os.PathLike | None,
    model: str | os.PathLike,
    threshold: float = 0.05,
    seed: int = 0,
    landmarks: str | os.PathLike | None = None,
) -> NavigationSession:
    """A session on ``image`` (any NIfTI; None: the built-in head phantom), loaded and scaled as ``slicenav render``
    does, with the trained dynamics stage ``model`` (a dynamics bundle root or a ``slicenav pretrain`` output) and,
    optionally, the head's ``landmarks`` file (``planning.read_landmarks``).

    Raises:
        FileNotFoundError: for a missing image, landmarks file or a folder that is not a trained dynamics stage.
        ValueError: for an image that is not one 3D volume, bad landmarks, or a stage without its recorded regime.
    """
    marks = read_landmarks(landmarks) if landmarks is not None else None
    volume = load_volume(image, channels=1) if image else shepp_logan_volume(160)
    scaled = scale_intensity(volume)
    name = str(image) if image else "builtin:shepp_logan"
    navigator = trained_navigator(model)
    return NavigationSession(scaled, navigator, recorded_navigation(model), name, threshold, seed, marks)
