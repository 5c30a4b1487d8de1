"""Calls to tenants' systems and their data; never imports activities, workflows, runs or api."""
