"""Starting and signalling runs: the one place that writes the database, then tells Temporal.

Used by the API and by activities that fan out; it never imports a workflow class (runs are
started by their registered names in ``nudge.naming``, signalled through
``nudge.models.signals``).
"""
