"""Minimal PyTorch re-implementations ("twins") of the official models.

Each twin has the official module names, so its `state_dict()` equals the official one key for
key; tests run it on converted weights, and users can run converted checkpoints with it. Only
these modules import torch (import them explicitly, e.g. `csr_jax.torch_twins.ucip`).
"""
