"""TensorBoard: `{name: tensorboard}`, or the shorthand `train.tensorboard: true`.

Every number of each epoch's epochs.csv row is also written as a TensorBoard scalar (step = the epoch, from 1) to
`<run>/tensorboard/` (rank 0 only); `tensorboard --logdir oof/<exp>` shows every fold side by side.
"""

from __future__ import annotations

from src.artifacts import TENSORBOARD_DIR
from src.engine.callbacks import Callback, register_callback


@register_callback
class TensorBoard(Callback):
    """Writes epochs.csv's numbers as TensorBoard scalars."""

    name = "tensorboard"

    def on_fit_start(self, run) -> None:
        self.board = None
        if run.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.board = SummaryWriter(log_dir=str(run.run_dir / TENSORBOARD_DIR))

    def on_epoch_end(self, run, row) -> None:
        if self.board is None:
            return
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)):
                self.board.add_scalar(key, value, row["epoch"])
        self.board.flush()

    def on_fit_end(self, run) -> None:
        if self.board is not None:
            self.board.close()
            self.board = None
