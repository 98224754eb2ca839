"""Alembic environment and revisions; a package only so that an install ships it beside `node`."""
