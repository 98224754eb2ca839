"""Who may open an association: the called-AE check and the calling-AE allow-list (no networking here)."""

from __future__ import annotations

from enum import StrEnum

from node.config.settings import CallerRule


class Refusal(StrEnum):
    CALLED_AE_NOT_RECOGNISED = "called AE title not recognised"
    CALLING_AE_NOT_RECOGNISED = "calling AE title not recognised"


class AccessPolicy:
    """An empty allow-list admits every caller (the embedded default; the node warns at start)."""

    def __init__(self, ae_title: str, allowed_callers: tuple[CallerRule, ...]) -> None:
        self.ae_title = ae_title
        self.allowed_callers = allowed_callers

    @property
    def open_to_all(self) -> bool:
        return not self.allowed_callers

    def check(self, calling_ae: str, called_ae: str, host: str) -> Refusal | None:
        if called_ae.strip() != self.ae_title:
            return Refusal.CALLED_AE_NOT_RECOGNISED
        if self.allowed_callers and not any(rule.admits(calling_ae, host) for rule in self.allowed_callers):
            return Refusal.CALLING_AE_NOT_RECOGNISED
        return None
