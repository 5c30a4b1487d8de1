"""Activity classes only, one module per workflow: `activities/X.py` serves `workflows/X.py`."""
