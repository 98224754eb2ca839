"""Random-weight presets: the 0.5b decoder has Qwen2.5-0.5B's shape (checked on the meta device,
nothing allocated), and benchmarks/decode_speed.py runs its rows on a tiny random export."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from echo.export.random_tiny import QWEN_VOCAB, SIZES, random_config
from echo.model.vlm import EchoVLM

ROOT = Path(__file__).resolve().parents[2]


def test_the_half_billion_preset_has_qwen2_5_0_5b_decoder_shapes() -> None:
    config = random_config(512, "0.5b")
    assert SIZES == ("tiny", "small", "0.5b")
    shape = (
        config.hidden_size,
        config.num_hidden_layers,
        config.num_attention_heads,
        config.num_key_value_heads,
        config.head_dim,
        config.intermediate_size,
        config.vocab_size,
    )
    assert shape == (896, 24, 14, 2, 64, 4864, QWEN_VOCAB)
    assert (config.vision.out_hidden_size, config.initializer_range) == (896, 0.02)
    with torch.device("meta"):
        model = EchoVLM(config)
    assert sum(p.numel() for p in model.model.parameters()) == 494_032_768  # Qwen2.5-0.5B: 0.49B
    assert sum(p.numel() for p in model.parameters()) == 631_701_376  # + an untied LM head, the tower
    with pytest.raises(ValueError, match="does not fit the 0.5b preset's 151936"):
        random_config(QWEN_VOCAB + 1, "0.5b")


@pytest.mark.slow
def test_decode_speed_runs_its_rows_on_a_tiny_random_export(tmp_path) -> None:
    out = tmp_path / "rows.json"
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "decode_speed.py"),
        "--random-tiny",
        "--random-size",
        "tiny",
        "--backends",
        "onnxruntime",
        "--provider",
        "cpu",
        "--images",
        "1",
        "--rounds",
        "1",
        "--max-new-tokens",
        "16",
        "--json",
        str(out),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["label"], r["provider"]) for r in rows] == [
        ("AR greedy", "cpu"),
        ("teacher tau=0.85", "cpu"),
        ("DCD student", "cpu"),
    ]
    assert all("error" not in row and not row["torch_imported"] for row in rows), rows
    assert [row["tokens_per_report"] for row in rows] == [16.0, 16.0, 16.0]  # never_stop: no eos
    assert rows[0]["forwards_per_report"] == 16.0 > rows[2]["forwards_per_report"]
