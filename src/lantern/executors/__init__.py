"""Where a stage's partitions run: in this process (local, the default) or as Ray tasks (ray)."""
