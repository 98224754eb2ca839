"""The text around the image: a checkpoint's chat template and the context row every path builds.

A Qwen2.5-VL chat model reads its image inside a chat turn. Its template, rendered for one user
message holding one image and the prompt (with the generation prompt added), gives

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n
    <|vision_start|><|image_pad|><|vision_end|>PROMPT<|im_end|>\\n<|im_start|>assistant\\n

and that rendering, placeholder included, is the generation spec's prompt. As in transformers'
processor, the one ``<|image_pad|>`` placeholder stands for the image's n tokens, so a context row is

    [text before the image][vision_start, image_pad x n, vision_end][text after the image]

A prompt without a placeholder (the bundled demo models' "Chest radiograph report:") keeps the
original layout, image first: [vision_start, image_pad x n, vision_end][prompt].

`context_row` is the one builder of that row: the torch paths (decoding, training batches,
prediction) and the onnxruntime engine call it, so this module must never import torch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from echo.errors import UserError
from echo.tokenizer import read_json_config

# The paper's report has a Findings and an Impression section; this is the user turn asking for it.
DEFAULT_CHAT_PROMPT = "Describe the findings and impression of this chest X-ray."
IMAGE_BLOCK = "<|vision_start|><|image_pad|><|vision_end|>"
# Where transformers keeps a chat template, in the order it prefers them.
TEMPLATE_JINJA = "chat_template.jinja"
TEMPLATE_JSON = "chat_template.json"
TOKENIZER_CONFIG = "tokenizer_config.json"


def context_row(
    n_image_tokens: int,
    prompt_ids: Sequence[int],
    *,
    vision_start_id: int,
    image_pad_id: int,
    vision_end_id: int,
) -> list[int]:
    """The context ids of one image of `n_image_tokens` tokens.

    `prompt_ids` holding one [vision_start, image_pad, vision_end] placeholder: that image_pad
    becomes n_image_tokens of them. Holding no vision token: the image block comes first."""
    if n_image_tokens < 1:
        raise ValueError(f"n_image_tokens must be >= 1, got {n_image_tokens}")
    ids = list(prompt_ids)
    placeholder = [vision_start_id, image_pad_id, vision_end_id]
    specials = set(placeholder)
    at = [i for i in range(len(ids) - 2) if ids[i : i + 3] == placeholder]
    if len(at) == 1:
        before, after = ids[: at[0]], ids[at[0] + 3 :]
    else:
        before, after = [], ids
    if any(token in specials for token in before + after):
        raise ValueError(
            "prompt_ids must not contain vision special tokens outside one "
            "[vision_start, image_pad, vision_end] placeholder"
        )
    return [*before, vision_start_id, *([image_pad_id] * n_image_tokens), vision_end_id, *after]


# ---- chat templates -----------------------------------------------------------------------------


def read_chat_template(directory: Path) -> str | None:
    """The checkpoint's chat template: chat_template.jinja, chat_template.json, or
    tokenizer_config.json's "chat_template" (a string, or a list of named ones: "default"); None
    when it has none."""
    jinja = directory / TEMPLATE_JINJA
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    for name in (TEMPLATE_JSON, TOKENIZER_CONFIG):
        path = directory / name
        template = _template_of(read_json_config(path).get("chat_template"), path)
        if template is not None:
            return template
    return None


def render_chat_prompt(template: str, prompt: str, special_tokens: dict[str, str] | None = None) -> str:
    """`template` rendered as transformers' apply_chat_template does (sandboxed jinja2,
    trim_blocks, lstrip_blocks) for one user turn [image, prompt], with the generation prompt."""
    from jinja2 import TemplateError
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
    )
    environment.filters["tojson"] = lambda value, indent=None: json.dumps(value, indent=indent)
    environment.globals["raise_exception"] = raise_exception
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    try:
        return environment.from_string(template).render(
            messages=messages, add_generation_prompt=True, **(special_tokens or {})
        )
    except TemplateError as error:
        raise UserError(f"the chat template does not render: {error}") from None


def chat_prompt(directory: Path, prompt: str = DEFAULT_CHAT_PROMPT) -> str:
    """The generation prompt of a chat checkpoint: its template rendered around one image and
    `prompt`, holding exactly one image placeholder (checked here, with one-line errors)."""
    template = read_chat_template(directory)
    if template is None:
        raise UserError(
            f"{directory} has no chat template ({TEMPLATE_JINJA}, {TEMPLATE_JSON} or "
            f"{TOKENIZER_CONFIG} 'chat_template')"
        )
    config = read_json_config(directory / TOKENIZER_CONFIG)
    tokens = {k: v for k, v in config.items() if k.endswith("_token") and isinstance(v, str)}
    rendered = render_chat_prompt(template, prompt, tokens)
    count = rendered.count(IMAGE_BLOCK)
    if count != 1:
        raise UserError(
            f"the chat template of {directory} renders {count} image blocks ({IMAGE_BLOCK}) "
            "for one image; it is not a Qwen2.5-VL image-chat template"
        )
    return rendered


def split_chat_prompt(rendered: str) -> tuple[str, str]:
    """(the text before the image block, the text after it) of a rendered chat prompt."""
    before, found, after = rendered.partition(IMAGE_BLOCK)
    if not found:
        raise UserError(f"the prompt holds no image block {IMAGE_BLOCK}")
    return before, after


def _template_of(value: Any, path: Path) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {item.get("name"): item.get("template") for item in value if isinstance(item, dict)}
        if isinstance(named.get("default"), str):
            return named["default"]
    raise UserError(f"{path}: chat_template must be a string or a list with a 'default' template")
