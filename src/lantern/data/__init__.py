"""Text corpora: where documents come from and how they become token sequences."""
