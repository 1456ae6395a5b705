"""Kaggle from this pipeline, in two subpackages named by where their code runs.

local/      runs HERE and drives Kaggle: the `kaggle` CLI wrappers (cli.py), leaderboard scores, the kernels'
            names, the inference and training kernel builders, the wheels dataset, the secret scan, the
            offline sandbox and parity check, push and follow.
on_kaggle/  runs ON Kaggle inside a kernel, unpacked from its script: the script template, the wheels install,
            prediction (predict.py) and training (train.py).
"""
