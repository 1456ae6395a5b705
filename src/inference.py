"""Loading a trained model for prediction: oof, submit, bench and the offline kernel use this, never the trainer."""
from __future__ import annotations

from pathlib import Path

from src.checkpoints import load_checkpoint
from src.formats.base import CompetitionFormat
from src.model import MultiHeadModel, build_model


def load_inference_model(checkpoint_path: Path, fmt: CompetitionFormat) -> tuple[MultiHeadModel, dict]:
    """Rebuild the model from a best.pt (weights only, no hub, no weight file needed)."""
    payload = load_checkpoint(checkpoint_path)
    model = build_model(payload["model_name"], fmt.heads())
    model.load_state_dict(payload["model"])
    return model, payload
