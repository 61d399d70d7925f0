"""The host kernel set: numpy/OpenCV pre/post-processing per stage (``kernels.py``), one file per
stage (detect, align, embed, swap, classic, paste)."""
