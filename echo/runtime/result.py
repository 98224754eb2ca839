"""What the engine returns for one study."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class GeneratedReport:
    findings: str
    impression: str
    text: str  # the decoded response, "FINDINGS: ...\nIMPRESSION: ..." when the model writes both
    tokens: int  # generated tokens (eos excluded)
    token_ids: tuple[int, ...]
    forwards: int  # decoder passes of the call that produced it (a batched pass counts once)
    seconds: float  # wall time of that call, image reading and preprocessing included
    timings: dict[str, float] = field(default_factory=dict)  # preprocess, vision, prefill, decode, total
    model_version: str = ""
    decode: str = ""  # ar | multistep | onestep
    batch_size: int = 1  # studies decoded together in that call

    @property
    def tokens_per_forward(self) -> float:
        return self.tokens / self.forwards if self.forwards else 0.0
