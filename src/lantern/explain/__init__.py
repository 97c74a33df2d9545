"""Explainers: prompt builders and parsers that turn a latent's examples into a short explanation."""
