"""Scorers (one module each) and the metrics they share."""
