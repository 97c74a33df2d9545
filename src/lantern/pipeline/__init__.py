"""The stages of a run, each reading the previous stage's files and writing its own."""
