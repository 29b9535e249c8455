"""Comparisons and studies: scripts run from the repository root (``python experiments/NAME.py``)."""
