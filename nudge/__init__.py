"""Nudge: durable follow-ups and customer workflows on Temporal."""

__version__ = "0.1.0"
