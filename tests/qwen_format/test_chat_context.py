"""The chat-templated context: one row on every path, equal to transformers' own, and AR parity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from echo.chat import chat_prompt, context_row, read_chat_template, render_chat_prompt, split_chat_prompt
from echo.data.preprocess import PreprocessConfig
from echo.decoding import decode_ar, prepare_context
from echo.errors import UserError
from echo.training.batches import Batcher
from echo.training.checkpoint import load_checkpoint
from echo.training.examples import ExampleSet
from echo.training.predict import make_context
from tests.qwen_format.conftest import QWEN_CHAT_TEMPLATE

USER_PROMPT = "Describe the findings and impression of this chest X-ray."
MESSAGES = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": USER_PROMPT}]}]
IMAGE = (np.random.default_rng(0).random((56, 84)) * 255).astype(np.uint8)  # grid (1, 4, 6): 6 tokens
N_IMAGE = 6


def test_context_row_places_the_image_at_the_placeholder() -> None:
    ids = dict(vision_start_id=3, image_pad_id=5, vision_end_id=4)
    assert context_row(2, [7, 8, 3, 5, 4, 10, 11], **ids) == [7, 8, 3, 5, 5, 4, 10, 11]
    assert context_row(2, [3, 5, 4], **ids) == [3, 5, 5, 4]
    assert context_row(2, [10, 11], **ids) == [3, 5, 5, 4, 10, 11]  # no placeholder: image first
    for bad in ([3, 5, 4, 3, 5, 4], [7, 3, 5, 4, 5], [3, 4, 10]):
        with pytest.raises(
            ValueError, match="outside one \\[vision_start, image_pad, vision_end\\] placeholder"
        ):
            context_row(2, bad, **ids)


def test_our_rendering_equals_transformers_apply_chat_template(qwen_source_dir: Path) -> None:
    from transformers import AutoTokenizer

    expected = AutoTokenizer.from_pretrained(qwen_source_dir).apply_chat_template(
        MESSAGES, add_generation_prompt=True, tokenize=False
    )
    rendered = chat_prompt(qwen_source_dir, USER_PROMPT)
    assert rendered == expected
    assert split_chat_prompt(rendered) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n",
        f"{USER_PROMPT}<|im_end|>\n<|im_start|>assistant\n",
    )


def test_the_template_is_read_where_transformers_keeps_it(tmp_path: Path) -> None:
    assert read_chat_template(tmp_path) is None
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "config"}))
    assert read_chat_template(tmp_path) == "config"
    (tmp_path / "chat_template.json").write_text(json.dumps({"chat_template": "json"}))
    assert read_chat_template(tmp_path) == "json"
    (tmp_path / "chat_template.jinja").write_text(QWEN_CHAT_TEMPLATE)
    assert read_chat_template(tmp_path) == QWEN_CHAT_TEMPLATE
    (tmp_path / "chat_template.jinja").unlink()
    (tmp_path / "chat_template.json").write_text(
        json.dumps({"chat_template": [{"name": "default", "template": "x"}]})
    )
    assert read_chat_template(tmp_path) == "x"
    with pytest.raises(UserError, match="the chat template does not render: no"):
        render_chat_prompt("{{ raise_exception('no') }}", "p")


@pytest.fixture(scope="module")
def checkpoint(qwen_init_dir: Path):
    return load_checkpoint(qwen_init_dir)


@pytest.fixture(scope="module")
def expected_row(qwen_init_dir: Path) -> list[int]:
    """transformers' tokenizer on its own template rendering, the image pad expanded as its processor does."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(qwen_init_dir)
    text = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    return tokenizer(text.replace("<|image_pad|>", "<|image_pad|>" * N_IMAGE)).input_ids


def test_every_torch_path_builds_transformers_row(checkpoint, expected_row: list[int]) -> None:
    model, tokenizer, spec = checkpoint
    predicted = make_context(model, tokenizer, spec.prompt, [IMAGE])  # training predict / selection
    assert predicted.input_ids.tolist() == [expected_row]
    assert predicted.image_grid_thw.tolist() == [[1, 4, 6]]
    decoding = prepare_context(
        model, predicted.pixel_values, predicted.image_grid_thw, tokenizer.encode(spec.prompt)
    )
    assert decoding.input_ids.tolist() == [expected_row]
    examples = ExampleSet(["a"], ["Findings: clear."], [IMAGE], [{}])
    preprocess = PreprocessConfig.from_dict(model.config.preprocess)
    batcher = Batcher(examples, tokenizer, spec.prompt, preprocess, 8, 32)
    assert batcher.context(0) == expected_row
    assert batcher.make([0], pad_with=tokenizer.pad_id).context_ids.tolist() == [expected_row]
    before, after = (tokenizer.encode(text) for text in split_chat_prompt(spec.prompt))
    assert expected_row == [*before, *context_row(N_IMAGE, [], **_vision_ids(tokenizer)), *after]
    assert (len(before), len(after), len(expected_row)) == (36, 50, 94)


def test_rope_positions_with_text_before_the_image_equal_transformers(
    checkpoint, qwen_init_dir: Path, expected_row: list[int]
) -> None:
    from transformers import Qwen2_5_VLForConditionalGeneration

    model, _, _ = checkpoint
    reference = Qwen2_5_VLForConditionalGeneration.from_pretrained(qwen_init_dir, dtype=torch.float32)
    ids = torch.tensor([expected_row])
    grid = torch.tensor([[1, 4, 6]])
    expected, _ = reference.model.get_rope_index(
        ids, mm_token_type_ids=(ids == model.config.image_token_id).int(), image_grid_thw=grid
    )
    ours = model.rope_index(ids, grid)
    assert torch.equal(ours, expected)
    start = expected_row.index(model.config.vision_start_token_id) + 1
    assert ours[:, 0, start].tolist() == [start, start, start]  # the image starts after the prefix
    from echo.runtime.positions import rope_index as runtime_rope_index

    runtime = runtime_rope_index(ids.numpy(), [(1, 4, 6)], model.config.image_token_id, 2)
    assert np.array_equal(runtime, expected.numpy())


def test_ar_greedy_equals_transformers_generate(
    checkpoint, qwen_init_dir: Path, expected_row: list[int]
) -> None:
    from transformers import Qwen2_5_VLForConditionalGeneration

    model, tokenizer, spec = checkpoint
    context = make_context(model, tokenizer, spec.prompt, [IMAGE])
    ours = decode_ar(model, context, max_new_tokens=24).tokens[0]
    reference = Qwen2_5_VLForConditionalGeneration.from_pretrained(qwen_init_dir, dtype=torch.float32).eval()
    ids = torch.tensor([expected_row])
    with torch.no_grad():
        generated = reference.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            mm_token_type_ids=(ids == model.config.image_token_id).int(),  # what its processor returns
            pixel_values=context.pixel_values,
            image_grid_thw=context.image_grid_thw,
            do_sample=False,
            max_new_tokens=24,
            repetition_penalty=1.0,  # the checkpoint's generation_config asks for 1.05; greedy is plain
            eos_token_id=model.config.eos_token_id,
            pad_token_id=tokenizer.pad_id,
        )
    expected = generated[0, ids.shape[1] :].tolist()
    if model.config.eos_token_id in expected:
        expected = expected[: expected.index(model.config.eos_token_id)]
    assert len(ours) >= 8
    assert ours == expected


def _vision_ids(tokenizer) -> dict[str, int]:
    return {
        "vision_start_id": tokenizer.vision_start_id,
        "image_pad_id": tokenizer.image_pad_id,
        "vision_end_id": tokenizer.vision_end_id,
    }


# The engine's row and tokens on a chat-templated export: tests/qwen_format/test_pipeline.py (one export
# serves both, after the stages).
