"""lantern: explain and score the latents of sparse coders (SAEs, transcoders, neurons) with LLMs."""

__version__ = "0.1.0"
