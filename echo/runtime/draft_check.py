"""The draft gate's model half: what is wrong with a draft, and the re-decodes that may fix it.

    problems = draft_problems(report)          # [] when the draft may be sent
    gated = gated_generate(engine, image)      # the served decoding; on problems, re-decodes
    if gated.problems: hold the study for attention, send nothing
    else: send gated.report (gated.report.decode / .decoding say which decoding wrote it)

A draft fails when it has adjacent duplicated words ("the the"), a broken sentence ("The mediastinal
contours. normal.", "effusion..": `echo.metrics.sentences`), a FINDINGS or IMPRESSION section that
is missing or empty, or a mean token confidence below a floor (the model was unsure of what it
wrote). When the exported model carries a re-decode model (the multi-step teacher, `echo-train
export --redecode-checkpoint`), that model writes the first re-decode with its own served decoding,
and the second one token per step. Then, or without one, the student re-decodes the same image with
more forwards per block (by default the multi-step decoder, up to one token per step), which is
what the one-step student trades away; when that draft fails too, a last decode commits exactly one
token per step (the multi-step decoder at threshold 1: every position waits until it is the most
confident one left). Pure functions of the report and the engine: the worker decides what a failure
does to the study and counts it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from echo.errors import UserError
from echo.metrics.duplicates import duplicate_words
from echo.metrics.sections import missing_sections
from echo.metrics.sentences import broken_sentences
from echo.runtime.prepared import PreparedImage
from echo.runtime.result import GeneratedReport

# Below this mean token confidence a draft is re-decoded. Chosen on the 382 validation studies of
# the bundled data set: it flags 53% of the one-step student's drafts (1.9 finding errors per
# study among them, 0.6 among the rest, and 20 of its 201 drafts with duplicated words or a missing
# section left unflagged, which the other checks catch) and none of the multi-step teacher's.
DEFAULT_MIN_MEAN_CONFIDENCE = 0.75
# The last re-decode's threshold: no position reaches a probability above 1, so the multi-step
# decoder commits one position per step, its most confident (the slowest, most careful decoding).
SEQUENTIAL_THRESHOLD = 1.0
SHOWN = 3  # examples a problem line quotes
SENTENCE_SHOWN_CHARS = 40


class DraftEngine(Protocol):
    """What the gate needs from echo.runtime.Engine (tests pass a stand-in)."""

    def generate(self, image: Any, **options: Any) -> GeneratedReport: ...


def draft_problems(
    report: GeneratedReport, min_mean_confidence: float | None = DEFAULT_MIN_MEAN_CONFIDENCE
) -> list[str]:
    """One line per reason the draft must not be sent as it is; [] when it may be.
    `min_mean_confidence` None skips the confidence check (a report without confidences, e.g.
    one written before they were recorded, is not held for lacking them)."""
    problems: list[str] = []
    duplicated = duplicate_words(report.text)
    if duplicated:
        pairs = [f"{word} {word}" for word in dict.fromkeys(duplicated)]
        problems.append(f"{len(duplicated)} adjacent duplicated word(s): {_quoted(pairs)}")
    broken = broken_sentences(report.text)
    if broken:
        cut = [sentence[:SENTENCE_SHOWN_CHARS] for sentence in broken]
        problems.append(f"{len(broken)} broken sentence(s): {_quoted(cut)}")
    missing = missing_sections(report.text)
    if missing:
        problems.append(f"missing or empty section(s): {', '.join(missing)}")
    mean = report.mean_confidence
    if min_mean_confidence is not None and mean is not None and mean < min_mean_confidence:
        problems.append(f"mean token confidence {mean:.3f} below {min_mean_confidence:.3f}")
    return problems


def _quoted(examples: Sequence[str]) -> str:
    """The first SHOWN examples, quoted, with ", ..." when there are more."""
    shown = ", ".join(f"'{example}'" for example in examples[:SHOWN])
    return shown + (", ..." if len(examples) > SHOWN else "")


@dataclass(frozen=True)
class DraftGate:
    """The gate's settings: the confidence floor, the decoding a failed draft is re-run with
    (steps None: the block size, one token per step at most; threshold None: the manifest's),
    whether a draft that fails again gets a last, sequential decode (one token per step), and
    whether the engine's re-decode model (the teacher, when the export carries one) goes first.

    With these defaults and the bundled student, which carries the teacher, on the 382 validation
    studies: 144 drafts pass, 234 are fixed by a re-decode (206 by the teacher's own decoding, 22
    by the teacher one token per step, 6 by the student's own two), 4 stay broken (held); the sent
    drafts' finding F1 is 0.676, precision 0.790 (0.527 for all one-step drafts). Without the
    teacher's one-token-per-step decode 12 were held (F1 0.664); without the teacher, 81 (F1 0.601,
    precision 0.740); without any sequential decode either, 112 (F1 0.581). Without the
    broken-sentence check 51 of the drafts sent had a broken sentence. Re-decoding with "refine"
    instead held 172 (before the broken-sentence check)."""

    min_mean_confidence: float | None = DEFAULT_MIN_MEAN_CONFIDENCE
    redecode: str = "multistep"
    steps: int | None = None
    threshold: float | None = None
    sequential_fallback: bool = True
    redecode_model: bool = True  # the engine's re-decode model (when it has one) re-decodes first

    def __post_init__(self) -> None:
        if self.min_mean_confidence is not None and not 0.0 <= self.min_mean_confidence <= 1.0:
            raise UserError(
                f"the draft gate's confidence floor must be within [0, 1], got {self.min_mean_confidence}"
            )
        if self.steps is not None and self.steps < 1:
            raise UserError(f"the draft gate's re-decode steps must be >= 1, got {self.steps}")

    def redecodes(self) -> list[dict[str, Any]]:
        """The decodings a failed draft is re-run with by the served model, in order, until one passes."""
        first = {"decode": self.redecode, "steps": self.steps, "threshold": self.threshold}
        return [first, *self.sequential()]

    def redecode_model_decodes(self) -> list[dict[str, Any]]:
        """The decodings the re-decode model (the teacher) runs first: its own served decoding,
        then, with the sequential fall-back, one token per step."""
        return [{}, *self.sequential()]

    def sequential(self) -> list[dict[str, Any]]:
        """The last, one-token-per-step re-decode ([] when it is off)."""
        if not self.sequential_fallback:
            return []
        return [{"decode": "multistep", "steps": self.steps, "threshold": SEQUENTIAL_THRESHOLD}]


@dataclass(frozen=True)
class GatedDraft:
    report: GeneratedReport  # the last draft decoded: the one to send when `problems` is empty
    problems: tuple[str, ...]  # what is still wrong with `report`; empty: it passed
    drafts: tuple[GeneratedReport, ...]  # every draft decoded, in order (1 to 5)
    first_problems: tuple[str, ...]  # why the first draft was re-decoded; empty: it passed at once

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def redecoded(self) -> bool:
        return len(self.drafts) > 1

    @property
    def outcome(self) -> str:
        """For counters: "passed", "redecoded" (fixed by the re-decode) or "held"."""
        return "held" if self.problems else "redecoded" if self.redecoded else "passed"

    # What the draft cost: every decode the gate ran, not only the last (a re-decoded study's
    # forwards, seconds and stage timings are those of all its drafts together).
    @property
    def forwards(self) -> int:
        return sum(draft.forwards for draft in self.drafts)

    @property
    def seconds(self) -> float:
        return sum(draft.seconds for draft in self.drafts)

    @property
    def timings(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for draft in self.drafts:
            for stage, seconds in draft.timings.items():
                totals[stage] = totals.get(stage, 0.0) + seconds
        return totals


def gated_generate(engine: DraftEngine, image: Any, gate: DraftGate | None = None) -> GatedDraft:
    """The served decoding's draft; while it has problems, the gate's re-decodes of the same image,
    in order, until a draft passes: the engine's re-decode model first (when it has one), then the
    engine's own. A re-decode that would repeat a decoding already run with the same settings is
    not run (decoding is deterministic: it would write the same draft). An engine with `prepare`
    reads and preprocesses the image once and computes its vision features once."""
    gate = gate or DraftGate()
    prepare = getattr(engine, "prepare", None)  # echo.runtime.Engine: read the image once, not per decode
    image = image if prepare is None else prepare(image)
    first = engine.generate(image)
    first_problems = tuple(draft_problems(first, gate.min_mean_confidence))
    drafts, problems = [first], first_problems
    redecoder = getattr(engine, "redecoder", None) if gate.redecode_model else None
    plan, theirs = [(engine, options) for options in gate.redecodes()], image
    if redecoder is not None:  # the teacher's own decoding, then its one token per step, first
        plan[:0] = [(redecoder, options) for options in gate.redecode_model_decodes()]
        # the pixels the served model read, once; its vision features too where the graphs are one
        theirs = image.for_another_model() if isinstance(image, PreparedImage) else image
    for writer, options in plan:
        if not problems:
            break
        if writer is engine and any(_same_decoding(draft, options) for draft in drafts):
            continue
        drafts.append(
            engine.generate(image, **options) if writer is engine else _redecode(writer, theirs, options)
        )
        problems = tuple(draft_problems(drafts[-1], gate.min_mean_confidence))
    return GatedDraft(drafts[-1], problems, tuple(drafts), first_problems)


def _redecode(redecoder: Any, image: Any, options: dict[str, Any]) -> GeneratedReport:
    """The re-decode model's draft of `image` (the served model's PreparedImage.for_another_model:
    the pixels it read, same preprocessing checked at load), named as its author (the SR and ORU
    say who wrote it). Its context is its own; its vision features are the served model's only
    where the two vision graphs are byte-identical."""
    report = redecoder.generate(image, **options)
    return replace(report, author=f"{redecoder.manifest.name} {report.model_version}")


def _same_decoding(report: GeneratedReport, options: dict[str, Any]) -> bool:
    return report.author is None and (report.decode, report.steps, report.threshold) == (
        options["decode"],
        options["steps"],
        options["threshold"],
    )


def gate_counts(results: Sequence[GatedDraft]) -> dict[str, int]:
    """{"passed", "redecoded", "held"} counts of several gated drafts (a status page's figures)."""
    counts = {"passed": 0, "redecoded": 0, "held": 0}
    for result in results:
        counts[result.outcome] += 1
    return counts
