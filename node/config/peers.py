"""The addresses settings name: calling-AE rules, DICOM and MLLP peers, listen addresses, facilities.

Each parser raises ValueError with a one-line message; `node.config.settings` names the variable.
"""

from __future__ import annotations

from dataclasses import dataclass

from exporters.ae_title import check_ae_title


@dataclass(frozen=True)
class CallerRule:
    """One entry of the calling-AE allow-list: an AE title, optionally pinned to a host."""

    ae_title: str
    host: str | None = None

    def admits(self, ae_title: str, host: str) -> bool:
        return ae_title.strip() == self.ae_title and (self.host is None or self.host == host)


@dataclass(frozen=True)
class DicomPeer:
    """A DICOM destination given as ``AET@host:port``."""

    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class MllpPeer:
    """An HL7 MLLP destination given as ``host:port``."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def _split_host_port(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{what} {value!r} must be host:port with a port between 1 and 65535")
    return host.strip("[]"), int(port)


def parse_callers(value: str) -> tuple[CallerRule, ...]:
    rules = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        ae, _, host = item.partition("@")
        rules.append(CallerRule(check_ae_title(ae, "calling AE"), host.strip() or None))
    return tuple(rules)


def parse_dicom_peer(value: str) -> DicomPeer:
    ae, sep, rest = value.partition("@")
    if not sep:
        raise ValueError(f"PACS {value!r} must be AET@host:port")
    host, port = _split_host_port(rest, "PACS address")
    return DicomPeer(check_ae_title(ae, "PACS AE title"), host, port)


def parse_mllp_peer(value: str) -> MllpPeer:
    return MllpPeer(*_split_host_port(value, "RIS"))


def parse_listen_address(value: str, what: str = "HL7 listen address") -> MllpPeer:
    return MllpPeer(*_split_host_port(value, what))


def parse_facilities(value: str) -> tuple[str, ...]:
    """MSH-4 values (HD.1, the namespace id) allowed to send signed reports; comma-separated."""
    facilities = tuple(item.strip() for item in value.split(",") if item.strip())
    for item in facilities:
        if len(item) > 64 or set(item) & set("|^~\\&"):
            raise ValueError(f"sending facility {item!r} must be 1-64 characters without | ^ ~ \\ &")
    return facilities
