"""Settings that choose among fixed options: the SR templates sent, the onnxruntime providers.

Each check raises ValueError with a one-line message; `node.config.settings` names the variable.
"""

from __future__ import annotations

from typing import Any

SR_TEMPLATES = ("2000", "1500")  # TID 2000 narrative SR, TID 1500 AI Results (IHE AIR) SR


def parse_sr_templates(value: Any) -> Any:
    """ECHO_SR_TEMPLATES as a tuple of template numbers, in order, each once ("TID1500" is 1500);
    empty is the default (both)."""
    if isinstance(value, int):
        value = str(value)
    if isinstance(value, list | tuple):
        value = ",".join(str(v) for v in value)
    if not isinstance(value, str):
        return value
    if not value.strip():
        return SR_TEMPLATES  # an empty variable is an unset one
    named = (t.strip().upper().removeprefix("TID").strip() for t in value.split(","))
    templates = tuple(dict.fromkeys(t for t in named if t))
    if not templates or any(t not in SR_TEMPLATES for t in templates):
        raise ValueError(
            f"SR templates {value!r}: give one or both of 2000 (narrative), 1500 (AI Results), comma-separated"
        )
    return templates


def check_ort_provider(value: str) -> str:
    """ECHO_ORT_PROVIDER normalised ("auto", or known provider names best first); an unknown name is
    refused at start (a typo is not a fall-back)."""
    if value.strip().lower() in ("", "auto"):
        return "auto"
    from echo.errors import UserError
    from echo.runtime.providers import check_provider_setting  # imports onnxruntime: only when named

    try:
        return check_provider_setting(value)
    except UserError as error:
        raise ValueError(str(error)) from None
