"""Temporal workflows: deterministic code only, readable as the business process they run."""
