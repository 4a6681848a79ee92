"""Stop a training run on a non-finite loss, with a clear error and a non-zero exit, before anything is saved.

ignite's ``TerminateOnNan`` ends the run *normally*: the final checkpoint and the encoder exports are then written
from diverged weights and the process exits 0. This handler raises instead, and is the first ``EXCEPTION_RAISED``
handler of the trainer (it attaches with the trainer's handlers, before the checkpoint savers of ``initialize``),
so MONAI's ``CheckpointSaver`` never saves the diverged weights as ``model.pt``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ignite.engine import Engine, Events

__all__ = ["NonFiniteLossError", "StopOnNonFiniteLoss"]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


def _loss_of(output: object) -> float:
    """The loss of a trainer's output: a dict, a decollated list of dicts (the loss repeated in each), or the loss."""
    output = output[0] if isinstance(output, list) and output and isinstance(output[0], dict) else output
    value = output["loss"] if isinstance(output, dict) else output
    return float(value.item() if hasattr(value, "item") else value)


class StopOnNonFiniteLoss:
    """Raise :class:`NonFiniteLossError` (naming the iteration and the value) as soon as the loss is not finite,
    and let no later ``EXCEPTION_RAISED`` handler run for any error: a failed run saves nothing as final (the
    periodic ``checkpoint_epoch=N.pt`` files of completed epochs stay, for ``--resume``).

    Args:
        output_transform: the loss from the engine's output; default ``output["loss"]`` (of its first item when the
            output is decollated).
        name: what the value is called in the message.
    """

    def __init__(self, output_transform: Callable[[object], float] = _loss_of, name: str = "train_loss") -> None:
        self.output_transform = output_transform
        self.name = name

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.check)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self.stop)

    def check(self, engine: Engine) -> None:
        value = self.output_transform(engine.state.output)
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"{self.name} is {value} at iteration {engine.state.iteration}: the training diverged (lower the "
                "learning rate, or check the data for NaN); stopped before saving or exporting anything."
            )

    def stop(self, engine: Engine, error: Exception) -> None:
        raise error
