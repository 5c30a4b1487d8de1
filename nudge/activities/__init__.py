"""Activities: every piece of I/O a workflow needs (database, HTTP, SMTP, Temporal client)."""
