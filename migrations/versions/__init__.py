"""Alembic revisions (loaded by path by Alembic, never imported)."""
