"""Latent records: activating windows, verified negatives, disjoint explain/test splits."""
