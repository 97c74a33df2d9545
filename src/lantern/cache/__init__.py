"""Sparse activation cache: streamed to disk in bounded memory, stored by latent (CSR), memory-mapped."""
