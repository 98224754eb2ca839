"""What the engine returns for one study."""

from __future__ import annotations

from dataclasses import dataclass, field

# Between a decoding and the re-decode model that wrote the draft: "multistep ... by teacher VERSION"
# (what the SR and ORU carry, and what `echo-admin status` counts teacher drafts by).
AUTHOR_MARK = " by "


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
    decode: str = ""  # the decoding that produced this draft: ar | multistep | onestep | refine
    batch_size: int = 1  # studies decoded together in that call
    # one per token: the softmax probability of the token at the forward that committed it
    confidences: tuple[float, ...] = ()
    steps: int | None = None  # multistep: the step budget per block it ran with
    threshold: float | None = None  # multistep: its tau; refine: its confidence threshold
    # set when the draft gate's re-decode model wrote it, not the served one: "NAME VERSION"
    author: str | None = None

    @property
    def tokens_per_forward(self) -> float:
        return self.tokens / self.forwards if self.forwards else 0.0

    @property
    def mean_confidence(self) -> float | None:
        """The mean of the per-token confidences; None for an empty draft."""
        return sum(self.confidences) / len(self.confidences) if self.confidences else None

    @property
    def decoding(self) -> str:
        """The decoding with its settings, as an SR or an ORU may name it: "onestep",
        "refine tau=0.90", "multistep steps=8 tau=0.85", "ar"; a re-decode model's draft names it:
        "multistep steps=8 tau=0.85 by teacher 1f0c2a9e4b7d3c58"."""
        parts = [self.decode]
        if self.steps is not None:
            parts.append(f"steps={self.steps}")
        if self.threshold is not None:
            parts.append(f"tau={self.threshold:.2f}")
        return " ".join(parts) + ("" if self.author is None else f"{AUTHOR_MARK}{self.author}")
