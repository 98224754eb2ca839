"""`echo-train predict` on an exported model writes what the torch checkpoint writes."""

from __future__ import annotations

import json

import pytest

from echo.data.manifest import write_manifest
from echo.data.synthetic import generate_study
from echo.errors import UserError
from echo.runtime.predict import predict_exported
from echo.training.examples import load_examples
from echo.training.predict import DecodeOptions, predict_rows


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    rows = [generate_study(seed=5, index=index, out_dir=root, size=64) for index in range(3)]
    path = root / "manifest.jsonl"
    write_manifest(path, rows)
    return path


def test_predictions_equal_the_torch_checkpoints(tiny, manifest, tmp_path) -> None:
    out = tmp_path / "pred.jsonl"
    count = predict_exported(tiny.export, manifest, out, split=None, batch_size=2, threads=1)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert count == len(rows) == 3
    examples = load_examples(manifest, None, tiny.preprocess_config)
    options = DecodeOptions(decode="onestep", max_new_tokens=tiny.spec.max_new_tokens)
    want = list(predict_rows(tiny.model, tiny.tokenizer, tiny.spec.prompt, examples, options, batch_size=2))
    assert [row["id"] for row in rows] == [row["id"] for row in want]
    assert [row["report"] for row in rows] == [row["report"] for row in want]
    assert [row["forwards"] for row in rows] == [row["forwards"] for row in want]
    assert all(row["seconds"] > 0 for row in rows)


def test_predict_overrides_and_errors(tiny, manifest, tmp_path) -> None:
    out = tmp_path / "pred.jsonl"
    predict_exported(tiny.export, manifest, out, decode="ar", split=None, limit=1, threads=1)
    row = json.loads(out.read_text())
    assert row["forwards"] == row["tokens"] == tiny.spec.max_new_tokens
    with pytest.raises(UserError, match="has no rows in split 'nonexistent'"):
        predict_exported(tiny.export, manifest, tmp_path / "none.jsonl", split="nonexistent")
    assert not (tmp_path / "none.jsonl").exists()
    with pytest.raises(UserError, match="decode must be one of ar, multistep, onestep, refine, not 'beam'"):
        predict_exported(tiny.export, tmp_path / "unread.jsonl", tmp_path / "x.jsonl", decode="beam")


def test_refine_predictions_equal_the_torch_checkpoints(tiny, manifest, tmp_path) -> None:
    """`echo-train predict --decode refine --threshold T` on both paths: same reports, forwards and
    mean token confidence."""
    out = tmp_path / "refine.jsonl"
    predict_exported(tiny.export, manifest, out, decode="refine", threshold=0.25, split=None, threads=1)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    examples = load_examples(manifest, None, tiny.preprocess_config)
    options = DecodeOptions(decode="refine", threshold=0.25, max_new_tokens=tiny.spec.max_new_tokens)
    want = list(predict_rows(tiny.model, tiny.tokenizer, tiny.spec.prompt, examples, options))
    assert [row["report"] for row in rows] == [row["report"] for row in want]
    assert [row["forwards"] for row in rows] == [row["forwards"] for row in want]
    assert [row["confidence"] for row in rows] == pytest.approx([row["confidence"] for row in want], abs=1e-5)
    blocks = tiny.spec.max_new_tokens // tiny.engine.manifest.generation.block_size
    assert all(blocks <= row["forwards"] <= 2 * blocks for row in rows)


def test_gated_predictions_are_the_worker_s_draft_gate(tiny, manifest, tmp_path) -> None:
    """`--gate`: a draft that passes is the one-step draft; a failed one is re-decoded multi-step,
    then one token per step, and its row counts every decode's forwards; one that stays broken
    says it was held and why."""
    runs = {}
    for name, options in (
        ("onestep", {}),
        ("multistep", {"decode": "multistep"}),
        ("sequential", {"decode": "multistep", "threshold": 1.0}),
        ("gated", {"gate": True}),
    ):
        out = tmp_path / f"{name}.jsonl"
        predict_exported(tiny.export, manifest, out, split=None, threads=1, **options)
        runs[name] = [json.loads(line) for line in out.read_text().splitlines()]
    outcomes = [row["gate"] for row in runs["gated"]]
    assert set(outcomes) <= {"passed", "redecoded", "held"} and outcomes != ["passed"] * 3  # random weights
    rows = zip(runs["gated"], runs["onestep"], runs["multistep"], runs["sequential"], strict=True)
    for gated, first, again, last in rows:
        if gated["gate"] == "passed":
            assert (gated["report"], gated["forwards"]) == (first["report"], first["forwards"])
        elif gated["report"] == again["report"] and gated["gate"] == "redecoded":
            assert gated["forwards"] == first["forwards"] + again["forwards"]
        else:
            assert gated["report"] == last["report"] and gated["decoding"].endswith("tau=1.00")
            assert gated["forwards"] == first["forwards"] + again["forwards"] + last["forwards"]
        assert ("problems" in gated) == (gated["gate"] == "held")
    with pytest.raises(UserError, match="--gate decodes as a worker does"):
        predict_exported(tiny.export, manifest, tmp_path / "x.jsonl", gate=True, batch_size=4)
