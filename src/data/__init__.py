"""Data: image loading, transforms from config, datasets and folds."""
