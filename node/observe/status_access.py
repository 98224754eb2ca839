"""Who may read /status: a bearer token when ECHO_STATUS_TOKEN_FILE is set, else only a loopback listener.

The page shows no patient data, but it does show what the node is doing, its failures and its
peers: with a token file, a request must carry the token (`Authorization: Bearer <token>` or
`?token=<token>`, compared in constant time) or is answered 401; without one, the page is served
only when ECHO_HTTP is bound to a loopback address (reached through SSH or a reverse proxy that
does its own authentication), and otherwise refused with 403 and the reason.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from urllib.parse import parse_qs

from echo.errors import UserError

BEARER = re.compile(r"\s*Bearer\s+(\S+)\s*$", re.IGNORECASE)
TOKEN_IN_QUERY = re.compile(r"(?<=[?&]token=)[^&\s\"]*")


@dataclass(frozen=True)
class Refusal:
    status: HTTPStatus
    reason: str  # one line, for the response body


@dataclass(frozen=True)
class StatusAccess:
    token: str | None  # None: no token file; then only a loopback listener serves the page

    @classmethod
    def from_token_file(cls, path: Path | None) -> StatusAccess:
        """The token the file holds (surrounding whitespace dropped); `UserError` when it cannot be read
        or is empty: a page meant to be guarded is never served unguarded."""
        if path is None:
            return cls(None)
        try:
            token = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            raise UserError(f"ECHO_STATUS_TOKEN_FILE {path} cannot be read: {error}") from None
        if not token:
            raise UserError(f"ECHO_STATUS_TOKEN_FILE {path} is empty")
        return cls(token)

    def refusal(self, authorization: str | None, query: str, listener_host: str) -> Refusal | None:
        """None when the request may read the page, else why not."""
        if self.token is None:
            if is_loopback(listener_host):
                return None
            return Refusal(
                HTTPStatus.FORBIDDEN,
                f"/status is off: ECHO_HTTP listens on {listener_host}, not loopback, and no "
                "ECHO_STATUS_TOKEN_FILE is set",
            )
        offered = [match.group(1) for match in [BEARER.match(authorization or "")] if match]
        offered += parse_qs(query, keep_blank_values=True).get("token", [])
        expected = self.token.encode()
        # Every offered token is compared (no early exit), each in constant time.
        if any([hmac.compare_digest(candidate.encode(), expected) for candidate in offered]):
            return None
        reason = "wrong token" if offered else "a token is required"
        return Refusal(
            HTTPStatus.UNAUTHORIZED, f"{reason}: send 'Authorization: Bearer <token>' or ?token=<token>"
        )


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def hide_token(text: str) -> str:
    """A request line fit for the log: the value of ?token= replaced."""
    return TOKEN_IN_QUERY.sub("***", text)
