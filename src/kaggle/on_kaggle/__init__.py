"""What runs on Kaggle inside a kernel (unpacked from the kernel script); standard library only at import time."""
