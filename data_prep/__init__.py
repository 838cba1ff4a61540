"""The prep step: HR folder -> MATLAB bicubic LR -> codec -> TFRecord shards (PyTorch side)."""
