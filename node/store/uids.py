"""UIDs as the node shows them outside the database: hashed, so logs and paths carry no identifiers."""

from __future__ import annotations

import hashlib


def uid_digest(uid: str) -> str:
    """A 128-bit hex digest of a UID: names spool folders and files without exposing the UID."""
    return hashlib.sha256(uid.encode("ascii", "replace")).hexdigest()[:32]


def short_uid(uid: str) -> str:
    """The first 12 hex characters of `uid_digest`: enough to tell studies apart in logs and tables."""
    return uid_digest(uid)[:12]
