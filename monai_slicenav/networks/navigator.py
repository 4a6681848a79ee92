"""The stage-2 training model: a frozen slice tokenizer, the latent dynamics transformer on its tokens, and the
optional pose pretext heads; its loss; and open-loop rollouts (imagined navigation)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..geometry import Pose, gap_matrix
from .dynamics import DynamicsConfig, LatentDynamics
from .pretext import GapHead, PoseHead
from .tokenizer import SliceTokenizer

__all__ = ["SliceNavigator", "NavigationLoss", "rollout", "predict_next"]


class SliceNavigator(nn.Module):
    """Frozen tokenizer + :class:`LatentDynamics` (+ pose heads), trained on rendered trajectories.

    ``forward(slices, actions)`` takes slice stacks (B, T, C, h, w) and the actions between them (B, T - 1, 7) and
    returns a dict: ``prediction`` (the dynamics output for steps 1 .. T - 1), ``target`` (true latents, or FSQ
    indices for ``fsq_ce``), ``predicted_latents`` / ``true_latents`` (codes, comparable under either objective),
    and, when the heads exist, ``pose`` (B, T - 1, 10) and ``gap`` (B, T - 1, T - 1, 7) from the trunk features of
    steps 0 .. T - 2.

    The tokenizer stays frozen and in eval mode whatever ``train()`` is called with; only the dynamics and the heads
    train (:meth:`trainable_parameters`).

    Args:
        tokenizer: the trained stage-1 tokenizer.
        dynamics: a :class:`LatentDynamics`, its :class:`DynamicsConfig` or the config's fields; ``latent_dim``
            is taken from the tokenizer (and ``codebook_size`` for ``fsq_ce``).
        pose_head: add the absolute pose-vector head.
        gap_head: add the pairwise relative-pose ("gap matrix") head.
    """

    def __init__(
        self,
        tokenizer: SliceTokenizer,
        dynamics: LatentDynamics | DynamicsConfig | Mapping,
        pose_head: bool = False,
        gap_head: bool = False,
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        for parameter in self.tokenizer.parameters():
            parameter.requires_grad_(False)
        if not isinstance(dynamics, LatentDynamics):
            fields = dynamics.to_dict() if isinstance(dynamics, DynamicsConfig) else dict(dynamics)
            fields["latent_dim"] = tokenizer.config.latent_channels
            if fields.get("objective") == "fsq_ce":
                fields["codebook_size"] = tokenizer.quantizer.codebook_size
            dynamics = LatentDynamics(DynamicsConfig(**fields))
        if dynamics.config.latent_dim != tokenizer.config.latent_channels:
            raise ValueError(
                f"The dynamics model expects {dynamics.config.latent_dim} latent channels, the tokenizer makes "
                f"{tokenizer.config.latent_channels}."
            )
        if dynamics.config.objective == "fsq_ce" and tokenizer.config.quantizer != "fsq":
            raise ValueError("objective 'fsq_ce' needs a tokenizer with quantizer='fsq'.")
        self.dynamics = dynamics
        width = dynamics.config.width
        self.pose_head = PoseHead(width) if pose_head else None
        self.gap_head = GapHead(width) if gap_head else None
        self.tokenizer.eval()

    def train(self, mode: bool = True) -> SliceNavigator:
        super().train(mode)
        self.tokenizer.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters an optimizer should update (everything but the frozen tokenizer)."""
        return [p for p in self.parameters() if p.requires_grad]

    @torch.no_grad()
    def tokens(self, slices: torch.Tensor) -> torch.Tensor:
        """Slice stacks (B, T, C, h, w) -> the frozen tokenizer's tokens (B, T, d, h / f, w / f)."""
        if slices.ndim != 5:
            raise ValueError(f"Expected slice stacks (B, T, C, h, w), got shape {tuple(slices.shape)}.")
        codes = self.tokenizer.encode(slices.flatten(0, 1))
        return codes.reshape(*slices.shape[:2], *codes.shape[1:])

    def latents_of(self, prediction: torch.Tensor) -> torch.Tensor:
        """A prediction (B, S, out, h, w) as codes on the tokenizer's grid (argmax for ``fsq_ce``, snapped onto the
        FSQ levels for regression with an FSQ tokenizer)."""
        if self.dynamics.config.objective == "fsq_ce":
            return self.tokenizer.quantizer.indices_to_codes(prediction.argmax(dim=2)).movedim(1, 2)
        if self.tokenizer.config.quantizer == "fsq":
            return self.tokenizer.quantizer.snap(prediction.flatten(0, 1)).reshape(prediction.shape)
        return prediction

    def forward(self, slices: torch.Tensor, actions: torch.Tensor) -> dict[str, torch.Tensor]:
        tokens = self.tokens(slices)
        self.dynamics._check(tokens, actions, min_steps=2)
        features = self.dynamics.features(tokens, actions)  # (B, T - 1, N, width)
        prediction = self.dynamics.predict(features, tokens[:, :-1])
        true_latents = tokens[:, 1:]
        if self.dynamics.config.objective == "fsq_ce":
            target = self.tokenizer.quantizer.codes_to_indices(true_latents.movedim(2, 1))  # (B, T - 1, h, w)
        else:
            target = true_latents
        output = {
            "prediction": prediction,
            "target": target,
            "predicted_latents": self.latents_of(prediction.detach()),
            "true_latents": true_latents,
        }
        pooled = features.mean(dim=2)  # (B, T - 1, width): one feature per slice
        if self.pose_head is not None:
            output["pose"] = self.pose_head(pooled)
        if self.gap_head is not None:
            output["gap"] = self.gap_head(pooled)
        return output


class NavigationLoss(nn.Module):
    """Next-step loss of the dynamics (MSE on latents, or cross-entropy on FSQ indices) plus weighted pose losses.

    ``forward(output, target)`` takes the :class:`SliceNavigator` output and a dict holding ``poses`` (B, T, 13,
    packed) for the gap loss and ``pose_vectors`` (B, T, 10) for the pose loss. Gap translations are divided by
    ``gap_scale_mm`` so that the seven action components weigh alike.

    Raises:
        ValueError: for an unknown objective, negative weights, or a weighted head missing from the output.
    """

    def __init__(
        self,
        objective: str = "regression",
        pose_weight: float = 0.0,
        gap_weight: float = 0.0,
        gap_scale_mm: float = 32.0,
    ) -> None:
        super().__init__()
        if objective not in ("regression", "fsq_ce") or min(pose_weight, gap_weight) < 0 or gap_scale_mm <= 0:
            raise ValueError(
                f"objective must be 'regression' or 'fsq_ce', weights >= 0 and gap_scale_mm > 0; got {objective!r}, "
                f"{pose_weight}, {gap_weight}, {gap_scale_mm}."
            )
        self.objective = objective
        self.pose_weight, self.gap_weight, self.gap_scale_mm = float(pose_weight), float(gap_weight), gap_scale_mm

    def forward(self, output: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if self.objective == "fsq_ce":
            loss = nn.functional.cross_entropy(output["prediction"].flatten(0, 1), output["target"].flatten(0, 1))
        else:
            loss = nn.functional.mse_loss(output["prediction"], output["target"])
        if self.pose_weight > 0:
            steps = output["pose"].shape[1]
            loss = loss + self.pose_weight * nn.functional.mse_loss(output["pose"], target["pose_vectors"][:, :steps])
        if self.gap_weight > 0:
            steps = output["gap"].shape[1]
            gaps = gap_matrix(Pose.from_tensor(target["poses"][:, :steps]))
            scale = torch.ones(gaps.shape[-1], dtype=gaps.dtype, device=gaps.device)
            scale[:3] = 1.0 / self.gap_scale_mm
            loss = loss + self.gap_weight * nn.functional.mse_loss(output["gap"], gaps * scale)
        return loss


@torch.no_grad()
def rollout(navigator: SliceNavigator, context: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Open-loop navigation in latent space: from the true tokens of ``k`` context slices (B, k, C, h, w), apply
    ``actions`` (B, k - 1 + K, 7) one step at a time, feeding each prediction back as the next input.

    Returns:
        the imagined token grids of the K future steps (B, K, d, h / f, w / f); decode with
        ``navigator.tokenizer.decode``.

    Raises:
        ValueError: when the actions do not extend past the context, or the sequence exceeds ``max_steps``.
    """
    tokens = navigator.tokens(context)
    k, total = tokens.shape[1], actions.shape[1] + 1
    if actions.ndim != 3 or total <= k or total > navigator.dynamics.config.max_steps:
        raise ValueError(
            f"Need actions (B, k - 1 + K, 7) with K >= 1 and k + K <= max_steps "
            f"({navigator.dynamics.config.max_steps}); got {k} context slices and actions {tuple(actions.shape)}."
        )
    for step in range(k, total):
        tokens = torch.cat([tokens, predict_next(navigator, tokens, actions[:, :step])], dim=1)
    return tokens[:, k:]


@torch.no_grad()
def predict_next(navigator: SliceNavigator, tokens: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """The next slice's token grid (B, 1, d, h', w') from the token grids of the slices so far (B, k, d, h', w')
    and the actions after each of them (B, k, 7): the ``k - 1`` between them and the one just taken, as codes
    on the tokenizer's grid (decode with ``navigator.tokenizer.decode``)."""
    features = navigator.dynamics.features(tokens, actions)
    return navigator.latents_of(navigator.dynamics.predict(features[:, -1:], tokens[:, -1:]))
