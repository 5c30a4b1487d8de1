"""Sending messages: channels, delivery, recipients. Never imports activities/workflows/runs/api."""
