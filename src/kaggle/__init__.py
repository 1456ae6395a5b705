"""Kaggle side of the pipeline: thin wrappers over the official `kaggle` CLI (`cli.py`)."""
