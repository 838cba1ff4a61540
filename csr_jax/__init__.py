"""csr_jax: compressed image super-resolution and restoration in JAX/Flax NNX.

Importing the package does no device work; shapes, meshes and compilation happen in
`csr_jax.main` / `csr_jax.train` and in the benchmark scripts.
"""

__version__ = "0.1.0"
