"""Image-competition pipeline: folds -> train -> oof -> thresholds -> submit, around one model."""

import os

# Whoever imports the package (a stage, a notebook, the tests, a kernel) makes no network call by default: no hub
# downloads (the `weights` stage lifts this for its own call) and no albumentations version check.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
