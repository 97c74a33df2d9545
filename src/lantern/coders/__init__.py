"""Sparse coders behind one interface: SAEs, transcoders and neurons all encode to (indices, values)."""
from lantern.coders.base import SparseActs, SparseCoder
from lantern.coders.loading import load_coder, load_coders

__all__ = ["SparseActs", "SparseCoder", "load_coder", "load_coders"]
