"""Decoding speed aggregated over a predictions file: tokens per forward pass, tokens per second.

Ratios of sums, not means of ratios, so long reports weigh by their length: tokens per forward is
the paper's parallelism measure (B for the one-step student, 1 for AR decoding).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Speed:
    tokens_per_forward: float | None  # None when no row says how many forwards it took
    tokens_per_second: float | None
    timed_reports: int  # rows that carried tokens, forwards and seconds


def decoding_speed(tokens: Sequence[int], forwards: Sequence[int], seconds: Sequence[float]) -> Speed:
    if not len(tokens) == len(forwards) == len(seconds):
        raise ValueError("tokens, forwards and seconds must have one entry per report")
    total_tokens, total_forwards, total_seconds = sum(tokens), sum(forwards), sum(seconds)
    return Speed(
        total_tokens / total_forwards if total_forwards > 0 else None,
        total_tokens / total_seconds if total_seconds > 0 else None,
        len(tokens),
    )
