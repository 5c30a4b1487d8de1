"""Data access. Functions take the session and never commit: the caller owns the transaction."""
