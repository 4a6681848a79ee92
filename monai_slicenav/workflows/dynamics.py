"""What the dynamics bundle's ignite workflows call: the frozen tokenizer, batch preparation, navigation strips
(true slices, tokenizer reconstructions, next-step predictions and open-loop rollouts) and the rollout writer."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.engines.utils import PrepareBatch
from PIL import Image

from ..controllability import ControllabilityMeter
from ..export import load_into, load_state_dict
from ..geometry import Pose
from ..io import atomic_write_files
from ..navigation import trajectory_to_dict
from ..networks.navigator import SliceNavigator, rollout
from ..networks.tokenizer import SliceTokenizer, TokenizerConfig
from .tokenizer import ItemWriter, StripHandler, unwrap_network

__all__ = [
    "load_tokenizer_weights",
    "stage_models",
    "recorded_navigation",
    "trained_navigator",
    "PrepareTrajectories",
    "navigation_strip",
    "NavigationStripHandler",
    "RolloutWriter",
    "ControllabilityHandler",
]

logger = logging.getLogger(__name__)

STRIP_ROWS = ("true slice", "tokenizer reconstruction", "next-step prediction", "open-loop rollout")


def load_tokenizer_weights(tokenizer: SliceTokenizer, source: str | os.PathLike) -> SliceTokenizer:
    """Load trained weights into the (frozen) tokenizer of the dynamics stage and return it.

    ``source`` is a trained tokenizer bundle (``models/model.pt``: encoder and decoder), a ``model.pt`` file, or
    an exported encoder folder (``encoder.pt`` + ``encoder.json``: the encoder only; the decoder keeps its random
    weights, so decoded predictions in TensorBoard and rollout strips are then meaningless, and a warning says so).
    All loads use ``weights_only=True``.

    Raises:
        FileNotFoundError: when ``source`` holds none of these.
        ValueError: when the weights or the export's config do not match ``tokenizer`` (keys or fields named).
    """
    source = Path(source)
    candidates = [source] if source.is_file() else [source / "models" / "model.pt", source / "encoder.pt"]
    weights = next((p for p in candidates if p.is_file()), None)
    if weights is None:
        raise FileNotFoundError(
            f"{source}: no trained tokenizer; expected one of {[str(p) for p in candidates]} "
            "(train the slicenav_tokenizer bundle first, or point tokenizer_dir at its bundle root or export)."
        )
    state = load_state_dict(weights)
    if weights.name == "encoder.pt":
        record = json.loads((weights.parent / "encoder.json").read_text())
        exported = TokenizerConfig(**record.get("arguments", {}).get("config", {}))
        if exported != tokenizer.config:
            raise ValueError(
                f"{weights.parent}: the export's tokenizer config {exported} differs from {tokenizer.config}."
            )
        load_into(tokenizer.encoder, {k.removeprefix("encoder."): v for k, v in state.items()}, True, str(weights))
        logger.warning(
            "%s: encoder weights only; the tokenizer's decoder is untrained (decoded images are noise).", weights
        )
    else:
        load_into(tokenizer, state, True, str(weights))
    for parameter in tokenizer.parameters():
        parameter.requires_grad_(False)
    return tokenizer.eval()


def stage_models(source: str | os.PathLike) -> Path:
    """The ``models`` folder of a trained dynamics stage given as a bundle root, its ``models`` folder, or a
    ``slicenav pretrain`` output folder of a dynamics variant (its ``pretrain.json`` names the stage).

    Raises:
        FileNotFoundError: when it lacks the context-encoder record or the weights.
    """
    source = Path(source)
    if (source / "pretrain.json").is_file():
        source = Path(json.loads((source / "pretrain.json").read_text())["stages"][-1]["root"])
    models = source / "models" if (source / "models").is_dir() else source
    missing = [str(p) for p in (models / "context_encoder" / "encoder.json", models / "model.pt") if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{source}: not a trained dynamics stage; missing {missing}.")
    return models


def recorded_navigation(source: str | os.PathLike) -> dict:
    """The navigation regime a trained dynamics stage (see :func:`stage_models`) was trained with: the keyword
    arguments of ``RandSliceTrajectoryd`` recorded in its context encoder's ``encoder.json``.

    Raises:
        ValueError: for a record without one (trained before it was recorded).
    """
    record_path = stage_models(source) / "context_encoder" / "encoder.json"
    navigation = json.loads(record_path.read_text()).get("navigation")
    if not isinstance(navigation, dict):
        raise ValueError(f"{record_path}: no 'navigation' regime recorded (trained before it was recorded).")
    return navigation


def trained_navigator(source: str | os.PathLike, load_weights: bool = True) -> SliceNavigator:
    """Rebuild a trained dynamics stage's :class:`SliceNavigator` from what its run recorded, whatever preset or
    overrides it was trained with: the architecture from ``models/context_encoder/encoder.json`` (tokenizer and
    dynamics configs), the pose heads from the keys of ``models/model.pt``, and (``load_weights``) its weights, read
    with ``weights_only=True``. The navigator is returned in eval mode.

    Args:
        source: as :func:`stage_models` takes it.

    Raises:
        FileNotFoundError: when the record or the weights are missing.
        ValueError: for a malformed record, or weights that do not match it (keys named).
    """
    models = stage_models(source)
    record_path, weights = models / "context_encoder" / "encoder.json", models / "model.pt"
    try:
        arguments = json.loads(record_path.read_text())["arguments"]
        tokenizer_config, dynamics_config = dict(arguments["tokenizer"]), dict(arguments["dynamics"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ValueError(
            f"{record_path}: not a context-encoder record with tokenizer and dynamics arguments ({err})."
        ) from err
    state = load_state_dict(weights)
    heads = {name: any(k.startswith(f"{name}.") for k in state) for name in ("pose_head", "gap_head")}
    navigator = SliceNavigator(SliceTokenizer(**tokenizer_config), dynamics_config, **heads)
    if load_weights:
        load_into(navigator, state, True, str(weights))
    return navigator.eval()


class PrepareTrajectories(PrepareBatch):
    """``prepare_batch`` of the dynamics trainer and evaluator: returns the slice stacks (B, T, C, h, w) as inputs,
    the pose targets (``poses`` and, when present, ``pose_vectors``) as targets, and the actions (B, T - 1, 7) as the
    network's second argument, so MONAI's ``SupervisedTrainer`` calls ``network(slices, actions)``. With
    ``max_steps``, longer trajectories are cut to their first ``max_steps`` slices (inference on long trajectories).

    Raises:
        KeyError: when the batch lacks the slices, the actions or the poses.
    """

    def __init__(
        self,
        image_key: str = "image",
        action_key: str = "actions",
        target_keys: Sequence[str] = ("poses", "pose_vectors"),
        max_steps: int | None = None,
    ) -> None:
        self.image_key, self.action_key, self.target_keys = image_key, action_key, tuple(target_keys)
        self.max_steps = max_steps

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], tuple[torch.Tensor], dict]:
        missing = [k for k in (self.image_key, self.action_key, self.target_keys[0]) if k not in batchdata]
        if missing:
            raise KeyError(f"PrepareTrajectories: the batch lacks {missing} (keys: {list(batchdata)}).")

        def move(key: str, steps: int | None) -> torch.Tensor:
            value = torch.as_tensor(batchdata[key])[:, :steps]
            return value.to(device=device, non_blocking=non_blocking, **kwargs)

        cut = self.max_steps
        targets = {key: move(key, cut) for key in self.target_keys if key in batchdata}
        actions = move(self.action_key, None if cut is None else cut - 1)
        return move(self.image_key, cut), targets, (actions,), {}


@torch.no_grad()
def navigation_strip(
    navigator: SliceNavigator, slices: torch.Tensor, actions: torch.Tensor, max_slices: int = 8
) -> torch.Tensor:
    """A (4 h, n w) image of one trajectory's steps 1 .. n (rows: :data:`STRIP_ROWS`): the true slices, the
    tokenizer's reconstructions of them, the dynamics' next-step predictions (from the true past) and an open-loop
    rollout from slice 0 and the actions alone, each decoded through the tokenizer; clipped to [0, 1].

    Args:
        navigator: the trained model.
        slices: one trajectory (T, C, h, w).
        actions: its actions (T - 1, 7).
        max_slices: at most this many steps are shown.
    """
    n = min(max_slices, len(slices) - 1)
    stack, moves = slices[None, : n + 1], actions[None, :n]
    decode = navigator.tokenizer.decode
    tokens = navigator.tokens(stack)[0, 1:]
    predicted = navigator.latents_of(navigator.dynamics(navigator.tokens(stack), moves))[0]
    imagined = rollout(navigator, stack[:, :1], moves)[0]
    rows = [stack[0, 1:], decode(tokens), decode(predicted), decode(imagined)]
    images = [torch.cat(list(row[:, 0].float().cpu()), dim=1) for row in rows]
    return torch.cat(images, dim=0).clamp(0.0, 1.0)


class NavigationStripHandler(StripHandler):
    """Log :func:`navigation_strip` of the first trajectory of the engine's last batch (rows: true slices,
    reconstructions, next-step predictions, open-loop rollout); arguments as :class:`StripHandler`."""

    default_tag = "true_recon_prediction_rollout"

    def strip(self, engine: Engine) -> torch.Tensor:
        navigator = unwrap_network(engine.network)
        slices, actions = engine.state.output["image"][0], engine.state.batch["actions"][0].to(engine.state.device)
        return navigation_strip(navigator, slices, actions, self.max_slices)


class RolloutWriter(ItemWriter):
    """Write, for each inferred trajectory, ``rollout.png`` (:func:`navigation_strip`: the true render above the
    imagined navigation), ``rollout.json`` (latent MSE per step of the next-step predictions and of the open-loop
    rollout) and ``trajectory.json`` (poses and actions) under ``<out_dir>/<name>``, atomically; arguments as
    :class:`ItemWriter` (``max_slices``: steps shown and scored).
    """

    def __call__(self, engine: Engine) -> None:
        navigator = unwrap_network(engine.network)
        batch = engine.state.batch
        slices, actions = engine.state.output["image"][0], batch["actions"][0].to(engine.state.device)
        n = min(self.max_slices, len(slices) - 1)
        with torch.no_grad():
            truth = navigator.tokens(slices[None, : n + 1])[0, 1:]
            predicted = navigator.latents_of(engine.state.output["pred"]["prediction"][:1, :n])[0]
            imagined = rollout(navigator, slices[None, :1], actions[None, :n])[0]
        scores = {
            "steps": n,
            "next_step_latent_mse": ((predicted - truth) ** 2).mean(dim=(1, 2, 3)).tolist(),
            "rollout_latent_mse": ((imagined - truth) ** 2).mean(dim=(1, 2, 3)).tolist(),
            "rows": list(STRIP_ROWS),
        }
        strip = navigation_strip(navigator, slices, actions, self.max_slices)
        picture = io.BytesIO()
        Image.fromarray((strip.numpy() * 255).round().astype("uint8")).save(picture, format="PNG")
        record = trajectory_to_dict(Pose.from_tensor(batch["poses"][0]), batch["actions"][0], slices.shape[-2:])
        target = self.out_dir / str(batch.get("name", [f"item_{engine.state.iteration:04d}"])[0])
        atomic_write_files(
            {
                target / "rollout.png": picture.getvalue(),
                target / "rollout.json": (json.dumps(scores, indent=2) + "\n").encode(),
                target / "trajectory.json": (json.dumps(record, indent=2) + "\n").encode(),
            }
        )


class ControllabilityHandler:
    """Compute the controllability figures (:mod:`~monai_slicenav.controllability`) over an evaluator's epoch and
    add them to ``engine.state.metrics`` (so ``StatsHandler``, ``TensorBoardStatsHandler`` and the stage record
    report them). Attach it before those handlers. Reads the slices from the engine output's ``image``, the
    actions and poses from the batch.

    Args:
        seed: seeds the derangements of the actions; each epoch starts from it again, so figures of two
            validations differ only by what the model learned.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self.meter = ControllabilityMeter()

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.completed)

    def started(self, engine: Engine) -> None:
        self.meter = ControllabilityMeter(torch.Generator().manual_seed(self.seed))

    def iteration(self, engine: Engine) -> None:
        batch = engine.state.batch
        slices = engine.state.output["image"]
        self.meter.update(unwrap_network(engine.network), slices, batch["actions"], batch["poses"])

    def completed(self, engine: Engine) -> None:
        engine.state.metrics.update(self.meter.compute())
