"""Moved to src/artifacts.py (kept until every caller imports from there)."""
from src.artifacts import Experiment  # noqa: F401
