"""The thin HTTP API: validate, authorize, write, start or signal a workflow, answer."""
