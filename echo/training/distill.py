"""Direct Conditional Distillation (the paper's Algorithm 1): targets, collection and the loss.

Collection runs the teacher with `low_confidence_dynamic` remasking on a training input, on its own
prefix, and keeps for every response position the teacher's full distribution *at the step that
committed it*. Stitched together, those distributions form a non-factorised target: a position
committed late was predicted with the earlier commits of its block visible. The committed tokens
are the pseudo-labels; the student sees each block fully masked (the teacher's prefix clean) and
matches the stitched distributions in one forward.

The store is O(K) per position (`SoftTargets`): the teacher's K most probable tokens with their
probabilities and the mass left outside them. The loss compares the teacher and the student on
K + 1 outcomes: the K stored tokens and one "other" bucket holding the rest of each distribution
(the student's mass outside the K tokens against the teacher's remaining mass). That is the exact
KL of the two distributions coarsened to those outcomes: never above the dense KL, equal to it
when K = V (the bucket is then empty) and needing no assumption on how the rest is spread.
K = 0 keeps the committed token only, as a one-hot (hard) target.

The factorised baseline (`target="factorised"`) replaces the stitched distributions by the
teacher's one-step marginals from the all-mask state: the mean-field target the paper argues
against.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from echo.training.batches import Batch
from echo.training.objectives import rad_logits


@dataclass
class SoftTargets:
    """Teacher distributions truncated to K tokens per position, plus the mass left outside them."""

    probs: torch.Tensor  # (..., K) float16: the K largest probabilities, descending
    ids: torch.Tensor  # (..., K) int32: their token ids
    rest: torch.Tensor  # (...) float32: the probability outside `ids` (the "other" bucket)

    @classmethod
    def from_dense(cls, probs: torch.Tensor, k: int, committed: torch.Tensor) -> SoftTargets:
        """(..., V) distributions -> top-k; k = 0: the `committed` (...) token as a one-hot."""
        if k < 0:
            raise ValueError(f"top-k must be >= 0, got {k}")
        if k == 0:
            ones = torch.ones(committed.shape + (1,), dtype=torch.float16, device=committed.device)
            return cls(ones, committed.unsqueeze(-1).to(torch.int32), torch.zeros(committed.shape))
        dense = probs.float()
        top = dense.topk(min(k, dense.shape[-1]), dim=-1)
        rest = dense.scatter(-1, top.indices, 0.0).sum(-1).clamp_min(0.0)  # exactly 0 when k >= V
        return cls(top.values.to(torch.float16), top.indices.to(torch.int32), rest.cpu())

    @classmethod
    def empty(cls, shape: tuple[int, ...], k: int) -> SoftTargets:
        """Zeros for `shape` positions and k stored tokens (no mass anywhere: padding)."""
        return cls(
            torch.zeros(shape + (k,), dtype=torch.float16),
            torch.zeros(shape + (k,), dtype=torch.int32),
            torch.zeros(shape),
        )

    def __getitem__(self, rows) -> SoftTargets:
        return SoftTargets(self.probs[rows], self.ids[rows], self.rest[rows])

    def __setitem__(self, rows, value: SoftTargets) -> None:
        self.probs[rows] = value.probs.cpu()
        self.ids[rows] = value.ids.cpu()
        self.rest[rows] = value.rest.cpu()

    @property
    def k(self) -> int:
        return self.probs.shape[-1]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.probs, self.ids, self.rest))


@dataclass
class Targets:
    """One collected round: pseudo-labels and teacher distributions for a set of examples."""

    indices: list[int]  # example indices the rows belong to
    response_ids: torch.Tensor  # (n, R) long: the teacher's committed tokens, eos-padded blocks
    live: torch.Tensor  # (n, R) bool: positions in blocks up to the one that holds eos
    soft: SoftTargets  # (n, R, K): the target distribution per position, truncated
    commit_step: torch.Tensor  # (n, R) long: the teacher's step that committed each position

    @property
    def nbytes(self) -> int:
        """Bytes the store holds: O(n R K)."""
        tensors = (self.response_ids, self.live, self.commit_step)
        return self.soft.nbytes + sum(t.numel() * t.element_size() for t in tensors)


STEP_WEIGHTS = ("uniform", "decreasing", "increasing")


def step_weights(commit_step: torch.Tensor, block_size: int, scheme: str) -> torch.Tensor:
    """Weight per position from the step that committed it (0 = first step of its block).

    "decreasing" (default) trusts early, confident commits most and halves the weight of a
    position committed at the block's last possible step; "increasing" is the mirror image.
    """
    s = commit_step.float() / max(1, block_size - 1)
    if scheme == "uniform":
        return torch.ones_like(s)
    if scheme == "decreasing":
        return 1.0 - 0.5 * s
    if scheme == "increasing":
        return 0.5 + 0.5 * s
    raise ValueError(f"step weighting {scheme!r} is not one of {', '.join(STEP_WEIGHTS)}")


def has_repetition_loop(tokens: list[int], n: int = 4, max_repeats: int = 3) -> bool:
    """True when some n-gram occurs `max_repeats` times or more: a degenerate trajectory."""
    counts: dict[tuple[int, ...], int] = {}
    for i in range(len(tokens) - n + 1):
        gram = tuple(tokens[i : i + n])
        counts[gram] = counts.get(gram, 0) + 1
        if counts[gram] >= max_repeats:
            return True
    return False


def truncated_kl(log_q: torch.Tensor, soft: SoftTargets) -> torch.Tensor:
    """(b, R) KL(teacher || student) over the stored tokens and one "other" bucket.

    log_q (b, R, V) is the student's log-distribution; with K = V this is the dense KL."""
    ids = soft.ids.long()
    p = soft.probs.float()
    kl = (p * (torch.log(p.clamp_min(1e-8)) - log_q.gather(-1, ids))).sum(-1)
    # The student's mass outside the stored ids; a finite floor keeps an empty bucket's gradient 0.
    log_q_other = log_q.scatter(-1, ids, -1e30).logsumexp(-1)
    rest = soft.rest.to(torch.float32, copy=True)  # a copy: the store may be an inference tensor
    other = rest * (torch.log(rest.clamp_min(1e-8)) - log_q_other)
    return kl + torch.where(rest > 0, other, torch.zeros_like(other))


def dcd_loss(
    student,
    batch: Batch,
    soft: SoftTargets,
    commit_step: torch.Tensor,
    live: torch.Tensor,
    *,
    mask_id: int,
    eos_id: int,
    block_size: int,
    step_weighting: str = "decreasing",
    eos_weight: float = 1.0,
    hard_weight: float = 0.0,
) -> torch.Tensor:
    """Forward KL(teacher || student) on fully masked blocks, step-weighted, plus CE on eos.

    `soft` holds the teacher's truncated distributions (see `truncated_kl`).
    ``batch.response_ids`` holds the pseudo-labels (the clean prefix the student conditions on).
    `hard_weight` mixes in cross-entropy on those committed tokens, with the same step weights:
    ``(1 - h) * KL + h * CE``; 0 is the paper's pure KL, 1 learns the committed tokens alone.
    """
    if not 0.0 <= hard_weight <= 1.0:
        raise ValueError(f"hard_weight must be within [0, 1], got {hard_weight}")
    all_masked = torch.ones_like(batch.response_ids, dtype=torch.bool)
    logits = rad_logits(student, batch, all_masked, mask_id, block_size)  # (b, R, V)
    log_q = F.log_softmax(logits.float(), dim=-1)
    kl = truncated_kl(log_q, soft)  # (b, R)
    if hard_weight > 0:
        ce = -log_q.gather(-1, batch.response_ids.unsqueeze(-1)).squeeze(-1)  # (b, R)
        kl = (1.0 - hard_weight) * kl + hard_weight * ce
    weights = step_weights(commit_step, block_size, step_weighting) * live
    loss = (kl * weights).sum() / weights.sum().clamp_min(1e-6)
    eos_positions = live & (batch.response_ids == eos_id)
    if eos_weight > 0 and eos_positions.any():
        loss = loss + eos_weight * F.nll_loss(log_q[eos_positions], batch.response_ids[eos_positions])
    return loss
