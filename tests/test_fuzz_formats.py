"""Fuzz the label and submission readers of every format: real lines mixed with junk, in any order.

Only the project's own PipelineError may come out; a reader that accepts the input returns
consistent shapes.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from src.demo import build_demo
from src.errors import PipelineError
from src.formats import create_format

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
JUNK = st.text(alphabet=st.sampled_from(list('0123456789 -1,\t"\ufeffabc./_')), max_size=40)

# format -> (label files to fuzz, reader to call)
CASES = {
    "deepfashion": (["train.csv", "test.csv"], lambda fmt: (fmt.read_train(), fmt.read_test())),
    "celeba": (["list_attr_celeba.txt", "list_eval_partition.txt"], lambda fmt: (fmt.read_train(), fmt.read_test())),
    "imet": (["labels.csv", "sample_submission.csv"], lambda fmt: (fmt.read_train(), fmt.read_test())),
}


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz-formats")
    return {
        name: build_demo(name, base / name, n_train=24, n_test=6, seed=1)
        for name in ("deepfashion", "celeba", "imet", "folder")
    }


def mutated(original: str):
    lines = original.splitlines()
    return st.lists(st.one_of(st.sampled_from(lines), JUNK), max_size=12).map(
        lambda chosen: "\r\n".join(chosen) if len(chosen) % 2 else "\n".join(chosen)
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_label_readers(demos, name):
    files, read = CASES[name]
    root = demos[name].root
    originals = {file: (root / file).read_text(encoding="utf-8") for file in files}

    @FUZZ
    @given(data=st.data())
    def check(data):
        for file, text in originals.items():
            (root / file).write_text(data.draw(mutated(text)), encoding="utf-8", newline="")
        try:
            train, test = read(create_format(name, root, {"fold_mode": "official"} if name == "celeba" else None))
            assert len(train.ids) == len(train.paths) and all(len(v) == len(train.ids) for v in train.targets.values())
            assert len(test.ids) == len(test.paths)
        except PipelineError:
            pass

    try:
        check()
    finally:
        for file, text in originals.items():
            (root / file).write_text(text, encoding="utf-8")


@pytest.mark.parametrize("name", ["deepfashion", "celeba", "imet", "folder"])
def test_submission_readers(demos, name, tmp_path):
    demo = demos[name]
    fmt = create_format(name, demo.root, {"fold_mode": "official"} if name == "celeba" else None)
    originals = [path.read_text(encoding="utf-8") for path in demo.solution_files]
    targets = [tmp_path / path.name for path in demo.solution_files]

    @FUZZ
    @given(data=st.data())
    def check(data):
        for target, text in zip(targets, originals):
            target.write_text(data.draw(mutated(text)), encoding="utf-8", newline="")
        try:
            ids, labels = fmt.read_submission(targets)
            assert all(len(values) == len(ids) for values in labels.values())
        except PipelineError:
            pass

    check()
