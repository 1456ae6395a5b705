"""Image-competition pipeline: folds -> train -> oof -> thresholds -> submit, around one model."""
