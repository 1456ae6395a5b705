"""What runs here and drives Kaggle: CLI wrappers, kernel and dataset builders, the offline check, push and follow."""
