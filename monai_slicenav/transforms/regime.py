"""The navigation regime: how random trajectories are drawn, written once (see :class:`NavigationRegime`)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["NAVIGATION_REGIME", "NavigationRegime"]


@dataclass(frozen=True)
class NavigationRegime:
    """How random navigation trajectories are drawn: per-step bounds and smoothness of the walks. Its defaults are
    the one source of the regime: :class:`RandSliceTrajectory`'s defaults and the pretraining bundles' values
    (``configs/pretraining.yaml`` reads them from :data:`NAVIGATION_REGIME`). The default regime makes the next
    slice unpredictable without the action: steps of up to 12 mm, 0.35 rad and 0.15 log-zoom, independent from step
    to step (momentum 0). ``scroll_probability`` > 0 mixes in trajectories that only scroll through the volume
    at ``scroll_step`` mm a step, as a window of consecutive slices does downstream (``Lift3D``)."""

    mode: str = "mixed"
    max_translation: float = 12.0
    max_rotation: float = 0.35
    max_log_zoom: float = 0.15
    momentum: float = 0.0
    zoom_range: tuple[float, float] = (0.5, 2.0)
    jump_probability: float = 0.0
    jump_steps: int = 4
    scroll_probability: float = 0.0
    scroll_step: float = 1.0


NAVIGATION_REGIME = NavigationRegime()
