"""Subject model loading, hookpoint resolution and truncated forward passes."""
