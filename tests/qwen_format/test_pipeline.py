"""The whole path a site takes from a public checkpoint, on a tiny Qwen2.5-VL in exactly the released
format: `echo-train init-from` -> `ar` -> `rad` -> `dcd` -> `export` (weights forced into ONNX
external data) -> the onnxruntime engine, with block-causal prompts (the released ECHO layout).

Parity at the end: the AR stage's greedy tokens equal transformers' own `generate`; the engine's
one-step and multi-step tokens equal our torch decoders' on the DCD student. Every stage records
its peak memory, and DCD's target store holds K probabilities per position, not the vocabulary.

The reports are made short (a sentence a section) so that a few dozen steps teach the tiny model
to end its reports: DCD keeps only teacher trajectories that end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from echo.cli import app
from echo.data.synthetic import generate_dataset
from echo.report import format_report

pytestmark = pytest.mark.slow

BLOCK = 4
_PROMPT = "Describe the findings and impression of this chest X-ray."  # init-from's default
TOP_K = 4
SHORT = {
    False: ("The lungs are clear.", "No acute process."),
    True: ("Small pleural effusion.", "Effusion."),
}


def _short_reports(manifest: Path) -> None:
    """Keep the studies and their labels; one short sentence per section, by effusion."""
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    for row in rows:
        findings, impression = SHORT[row["labels"]["pleural_effusion"] == "positive"]
        row.update(findings=findings, impression=impression, report=format_report(findings, impression))
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.fixture(scope="module")
def pipeline(qwen_source_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("qwen_pipeline")
    manifest = generate_dataset(16, seed=5, out_dir=root / "data", size=64, workers=1)
    _short_reports(manifest)
    runner = CliRunner()

    def run(*argv: str) -> None:
        result = runner.invoke(app, list(argv), catch_exceptions=False)
        assert result.exit_code == 0, result.output

    common = [
        "--data",
        str(manifest),
        "--batch-size",
        "8",
        "--val-limit",
        "4",
        "--cache-dir",
        str(root / "cache"),
    ]
    dirs = {name: root / name for name in ("init", "ar", "rad", "dcd", "onnx")}
    run("init-from", "--checkpoint", str(qwen_source_dir), "--out", str(dirs["init"]), "--block-size", str(BLOCK),
        "--prompt-attention", "block_causal")  # fmt: skip
    run("ar", "--init", str(dirs["init"]), "--out", str(dirs["ar"]), "--steps", "60", "--lr", "3e-3",
        "--val-every", "60", "--max-response-tokens", "32", *common)  # fmt: skip
    run("rad", "--init", str(dirs["ar"] / "last"), "--out", str(dirs["rad"]), "--block-size", str(BLOCK),
        "--steps", "40", "--lr", "2e-3", "--val-every", "40", *common)  # fmt: skip
    run("dcd", "--teacher", str(dirs["rad"] / "last"), "--out", str(dirs["dcd"]), "--rounds", "1",
        "--collect-per-round", "8", "--steps", "4", "--val-every", "4", "--lr", "1e-3",
        "--target-top-k", str(TOP_K), *common)  # fmt: skip
    run("export", "--checkpoint", str(dirs["dcd"] / "last"), "--out", str(dirs["onnx"]),
        "--external-data", "always")  # fmt: skip
    return {**dirs, "manifest": manifest}


def _image(manifest: Path) -> np.ndarray:
    """The first study's frontal as training reads it: uint8 at full size."""
    from echo.data.preprocess import load_pixels

    row = json.loads(manifest.read_text().splitlines()[0])
    return np.round(load_pixels(manifest.parent / row["frontal"]) * 255.0).astype(np.uint8)


def test_every_stage_keeps_the_released_format_and_records_its_peak_memory(pipeline) -> None:
    from echo.model import EchoVLM

    for stage in ("ar", "rad", "dcd"):
        metrics = json.loads((pipeline[stage] / "metrics.json").read_text())
        assert metrics["peak_rss_mib"] > 0, stage
        config = json.loads((pipeline[stage] / "last" / "config.json").read_text())
        assert config["model_type"] == "qwen2_5_vl" and config["prompt_attention"] == "block_causal"
        assert EchoVLM.from_pretrained(pipeline[stage] / "last").config.mask_token_id is not None
    # The chat template and processor files travel with the tokenizer: transformers renders the
    # last stage's prompt as the stages did.
    from transformers import AutoTokenizer

    from echo.training.checkpoint import GenerationSpec

    reloaded = AutoTokenizer.from_pretrained(pipeline["dcd"] / "last")
    message = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": _PROMPT}]}]
    rendered = reloaded.apply_chat_template(message, tokenize=False, add_generation_prompt=True)
    assert rendered == GenerationSpec.load(pipeline["dcd"] / "last").prompt
    assert (pipeline["dcd"] / "last" / "preprocessor_config.json").is_file()
    # DCD kept trajectories, and stored K probabilities per position (plus the rest's mass).
    rounds = json.loads((pipeline["dcd"] / "metrics.json").read_text())["rounds"]
    assert rounds[0]["kept"] > 0
    assert rounds[0]["store_bytes"] < rounds[0]["kept"] * 64 * (TOP_K * 8 + 32)


def test_forced_external_data_puts_every_graphs_weights_beside_it(pipeline) -> None:
    import onnx

    files = json.loads((pipeline["onnx"] / "manifest.json").read_text())["files"]
    for graph in ("vision.onnx", "decoder.onnx"):
        data = f"{graph}.data"
        assert data in files and (pipeline["onnx"] / data).stat().st_size > 10_000
        model = onnx.load(str(pipeline["onnx"] / graph), load_external_data=False)
        locations = {
            entry.value
            for tensor in model.graph.initializer
            for entry in tensor.external_data
            if entry.key == "location"
        }
        assert locations == {data}
        assert (pipeline["onnx"] / graph).stat().st_size < (pipeline["onnx"] / data).stat().st_size


def test_the_external_data_export_matches_a_fresh_export(pipeline, tmp_path) -> None:
    """`verify` re-exports a model whose graphs all keep their weights apart in the same way."""
    from echo.export.verify import fresh_export_differences

    assert fresh_export_differences(pipeline["onnx"], pipeline["dcd"] / "last", tmp_path) == []


def test_the_ar_stage_decodes_as_transformers_generate(pipeline) -> None:
    from transformers import Qwen2_5_VLForConditionalGeneration

    from echo.decoding import decode_ar
    from echo.training.checkpoint import load_checkpoint
    from tests.qwen_format.test_chat_context import make_context

    model, tokenizer, spec = load_checkpoint(pipeline["ar"] / "last")
    image = _image(pipeline["manifest"])
    context = make_context(model, tokenizer, spec.prompt, [image])
    ours = decode_ar(model, context, max_new_tokens=24).tokens[0]
    reference = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        pipeline["ar"] / "last", dtype=torch.float32
    )
    ids = context.input_ids
    with torch.no_grad():
        generated = reference.eval().generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            mm_token_type_ids=(ids == model.config.image_token_id).int(),
            pixel_values=context.pixel_values,
            image_grid_thw=context.image_grid_thw,
            do_sample=False,
            max_new_tokens=24,
            repetition_penalty=1.0,
            eos_token_id=model.config.eos_token_id,
            pad_token_id=tokenizer.pad_id,
        )
    expected = generated[0, ids.shape[1] :].tolist()
    if model.config.eos_token_id in expected:
        expected = expected[: expected.index(model.config.eos_token_id)]
    assert ours == expected and len(ours) >= 4
    assert tokenizer.decode(ours).startswith("FINDINGS:")  # the stage learnt the report's shape


@pytest.mark.parametrize("decode", ["onestep", "multistep", "ar"])
def test_the_engine_writes_the_torch_decoders_tokens(pipeline, decode: str) -> None:
    from echo.data.preprocess import preprocess
    from echo.decoding import Context, build_context_ids, decode_ar, decode_block_diffusion, decode_onestep
    from echo.runtime import DecodeOptions, Engine
    from echo.training.checkpoint import load_checkpoint

    engine = Engine.load(pipeline["onnx"], providers="cpu", threads=1, warm_up=False)
    model, tokenizer, spec = load_checkpoint(pipeline["dcd"] / "last")
    image = preprocess(_image(pipeline["manifest"]).astype(np.float32) / 255.0, engine.preprocess_config)
    got = engine.decode_processed([image], DecodeOptions(decode=decode, max_new_tokens=16))
    t, h, w = image.grid_thw
    row = build_context_ids(
        t * h * w // model.config.vision.spatial_merge_size**2,
        tokenizer.encode(spec.prompt),
        vision_start_id=tokenizer.vision_start_id,
        image_pad_id=tokenizer.image_pad_id,
        vision_end_id=tokenizer.vision_end_id,
    )
    context = Context(
        torch.tensor([row]), torch.from_numpy(image.pixel_values), torch.tensor([image.grid_thw])
    )
    block = model.config.block_size
    assert engine._prepare([image]).ids.tolist() == [row]  # the chat-templated row, as torch builds it
    if decode == "ar":
        want = decode_ar(model, context, 16)
    elif decode == "onestep":
        want = decode_onestep(model, context, block, 16)
    else:
        want = decode_block_diffusion(model, context, block, 16, threshold=spec.threshold)
    assert got.tokens == want.tokens and len(got.tokens[0]) > 0
    assert got.forwards == want.forwards
