"""Progressive resizing as one callback: each epoch trains at its stage's size, validation at data.image_size,
resume exact."""

from __future__ import annotations

import pandas as pd
import pytest
from helpers import tiny_config
from test_train_resume import _assert_resume_is_exact

from src.engine import Callback, create_callbacks, register_callback
from src.errors import PipelineError
from src.stage import main


@register_callback
class BatchSides(Callback):
    """Records (epoch, side) of every training batch the model sees."""

    name = "test_batch_sides"
    SEEN: list[tuple[int, int, int]] = []

    def on_batch_end(self, run, batch):
        self.SEEN.append((run.epoch, batch.images.shape[-2], batch.images.shape[-1]))


def test_each_epoch_trains_at_its_size_and_validates_at_the_full_one(tiny_imet_root, tmp_path):
    root, _ = tiny_imet_root
    BatchSides.SEEN.clear()
    callbacks = [{"name": "progressive_resize", "sizes": {3: 32, 1: 16}}, {"name": "test_batch_sides"}]
    config = tiny_config(tmp_path, "imet", root, {"train": {"epochs": 3, "callbacks": callbacks}})
    assert main(["folds", "--config", str(config), "--quiet"]) == 0
    assert main(["train", "--config", str(config), "--fold", "0", "--quiet"]) == 0
    sides = {(epoch, height, width) for epoch, height, width in BatchSides.SEEN}
    assert sides == {(0, 16, 16), (1, 16, 16), (2, 32, 32)}
    epochs = pd.read_csv(tmp_path / "out" / "oof" / "tiny" / "fold-0" / "epochs.csv")
    assert epochs["train_size"].tolist() == [16, 16, 32] and epochs["score"].between(0, 1).all()


def test_progressive_resize_resumes_exactly(tiny_imet_root, tmp_path):
    root, _ = tiny_imet_root
    callbacks = [{"name": "progressive_resize", "sizes": {1: 24, 2: 32}}]
    _assert_resume_is_exact(root, tmp_path, {"train": {"epochs": 3, "callbacks": callbacks}})


def test_sizes_must_start_at_epoch_one():
    with pytest.raises(PipelineError) as error:
        create_callbacks([{"name": "progressive_resize", "sizes": {2: 32}}])
    assert "give the size of epoch 1" in str(error.value)
    [resize] = create_callbacks([{"name": "progressive_resize", "sizes": {1: 16, 4: 32}}])
    assert [resize.size_at(epoch) for epoch in range(5)] == [16, 16, 16, 32, 32]
