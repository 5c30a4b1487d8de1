"""Pydantic definitions, SQLAlchemy tables and migrations."""
