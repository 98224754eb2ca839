"""`echo-train init-from`: a public Qwen2.5-VL checkpoint made into the start of our stages.

One documented step turns a transformers Qwen2.5-VL directory (config.json in either layout,
safetensors single or sharded, any dtype, tokenizer.json, a chat template) into a checkpoint that
`echo-train ar/rad/dcd --init`, `echo-train export` and the engine accept:

1. ``<|MASK|>`` is added to the tokenizer as a special token (kept if it is there, or if config.json
   names a mask_token_id already); its embedding row (and an untied head's row) starts as the mean
   row, and the vocabulary grows when the id is past the embedding's last row.
2. config.json gets block_size, prompt_attention and the "preprocess" section, whose max_pixels is
   --max-pixels, else the paper's 2,250,000 for a source at Qwen's 12,845,056, else the source's.
3. The chat template, rendered for one user turn [image, --prompt] with the generation prompt, is
   echo_generation.json's prompt (echo.chat places the image at its placeholder).

Weights are written in the source's dtype. Running it on its own output writes the same checkpoint.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from echo.chat import DEFAULT_CHAT_PROMPT
from echo.errors import UserError

PROMPT_ATTENTION_CHOICES = ("causal", "block_causal")
# Files copied from the source as they are (transformers reads them; we read generation_config's eos ids).
COPIED_FILES = ("generation_config.json", "chat_template.json", "chat_template.jinja")
PREPROCESSOR_CONFIG = "preprocessor_config.json"
TOKENIZER_CONFIG = "tokenizer_config.json"


@dataclass(frozen=True)
class InitSummary:
    mask_token_id: int
    mask_added: bool  # False: the source had one
    vocab_size: int  # after any growth
    max_pixels: int
    dtype: str
    prompt: str  # the rendered chat prompt


def command(
    checkpoint: Annotated[
        Path, typer.Option("--checkpoint", help="transformers Qwen2.5-VL checkpoint directory")
    ],
    out: Annotated[Path, typer.Option("--out", help="new checkpoint directory (must not hold one)")],
    block_size: Annotated[int, typer.Option(help="response tokens denoised together")] = 8,
    prompt_attention: Annotated[
        str, typer.Option(help="causal, or block_causal (the released ECHO checkpoints)")
    ] = "causal",
    max_pixels: Annotated[
        int | None,
        typer.Option(help="largest resized image area (default: 2,250,000 for a Qwen-default source)"),
    ] = None,
    prompt: Annotated[str, typer.Option(help="the user turn that asks for the report")] = DEFAULT_CHAT_PROMPT,
) -> None:
    """Make a Qwen2.5-VL checkpoint the start of the stages: add <|MASK|>, set the block size,
    preprocessing and chat prompt."""
    summary = init_from(
        checkpoint,
        out,
        block_size=block_size,
        prompt_attention=prompt_attention,
        max_pixels=max_pixels,
        prompt=prompt,
    )
    how = "added" if summary.mask_added else "kept"
    typer.echo(
        f"wrote {out}: <|MASK|> {how} as id {summary.mask_token_id}, vocabulary {summary.vocab_size}, "
        f"max_pixels {summary.max_pixels}, {summary.dtype}"
    )


def init_from(
    source: Path,
    out: Path,
    *,
    block_size: int = 8,
    prompt_attention: str = "causal",
    max_pixels: int | None = None,
    prompt: str = DEFAULT_CHAT_PROMPT,
) -> InitSummary:
    """Write `out` from the Qwen2.5-VL checkpoint `source` (see the module docstring)."""
    from echo.chat import chat_prompt
    from echo.model import EchoVLConfig, EchoVLM
    from echo.model.qwen_import import grow_vocabulary, set_mean_rows
    from echo.tokenizer import MASK, ReportTokenizer, add_mask_token, read_tokenizer_file
    from echo.training.checkpoint import GenerationSpec

    _check_options(block_size, prompt_attention, max_pixels, prompt)
    config = _qwen_config(source, EchoVLConfig)
    if not (source / "tokenizer.json").is_file():
        raise UserError(f"{source} has no tokenizer.json (the Qwen2.5-VL tokenizer is needed)")
    _check_out(source, out)
    rendered = chat_prompt(source, prompt)
    backend = read_tokenizer_file(source / "tokenizer.json")
    mask_added = config.mask_token_id is None and backend.token_to_id(MASK) is None
    mask_id = config.mask_token_id if config.mask_token_id is not None else add_mask_token(backend)
    preprocess = _preprocess(config.preprocess, max_pixels)

    model = EchoVLM.from_pretrained(source, dtype=None)
    dtype = model.dtype
    if mask_id >= model.config.vocab_size:
        grow_vocabulary(model, mask_id + 1)
    elif mask_added:
        set_mean_rows(model, mask_id)
    model.config = model.config.with_changes(
        mask_token_id=mask_id, block_size=block_size, prompt_attention=prompt_attention, preprocess=preprocess
    )
    model.model.config = model.config

    staging = out.parent / f".{out.name}.init-from"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        model.save_pretrained(staging, dtype=dtype)
        backend.save(str(staging / "tokenizer.json"))
        for name in COPIED_FILES:
            if (source / name).is_file():
                shutil.copyfile(source / name, staging / name)
        _write_preprocessor_config(source, staging, preprocess)
        _write_tokenizer_config(source, staging, mask_id if mask_added else None)
        GenerationSpec(prompt=rendered).save(staging)
        _check_context(ReportTokenizer.from_dir(staging), rendered, source)
        if out.exists():
            out.rmdir()  # _check_out allowed only an empty directory
        staging.replace(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return InitSummary(
        mask_token_id=mask_id,
        mask_added=mask_added,
        vocab_size=model.config.vocab_size,
        max_pixels=int(preprocess["max_pixels"]),
        dtype=str(dtype).removeprefix("torch."),
        prompt=rendered,
    )


def _check_options(block_size: int, prompt_attention: str, max_pixels: int | None, prompt: str) -> None:
    if block_size < 1:
        raise UserError(f"--block-size must be >= 1, got {block_size}")
    if prompt_attention not in PROMPT_ATTENTION_CHOICES:
        raise UserError(
            f"--prompt-attention must be one of {', '.join(PROMPT_ATTENTION_CHOICES)}, not {prompt_attention!r}"
        )
    if max_pixels is not None and max_pixels < 1:
        raise UserError(f"--max-pixels must be positive, got {max_pixels}")
    if not prompt.strip():
        raise UserError("--prompt must not be empty")


def _qwen_config(source: Path, config_class):
    """The source's config, or a UserError saying why it is not a Qwen2.5-VL checkpoint."""
    if not source.is_dir():
        raise UserError(f"--checkpoint {source} is not a directory")
    if not (source / "config.json").is_file():
        raise UserError(f"{source} is not a Qwen2.5-VL checkpoint: it has no config.json")
    try:
        return config_class.from_dir(source)
    except UserError as error:
        raise UserError(f"{source} is not a Qwen2.5-VL checkpoint: {error}") from None
    except ValueError as error:  # the config's own consistency checks
        raise UserError(f"{source}/config.json: {error}") from None


def _check_out(source: Path, out: Path) -> None:
    if out.resolve() == source.resolve():
        raise UserError("--out must be a new directory, not the --checkpoint directory")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "holds a checkpoint" if (out / "config.json").is_file() else "is not an empty directory"
        raise UserError(f"--out {out} {what}; choose a new directory")


def _preprocess(source: dict, max_pixels: int | None) -> dict:
    """The source's preprocessing with the stated max_pixels (checked as echo.data reads it)."""
    from echo.data.preprocess import PreprocessConfig
    from echo.model.vision_config import CHEST_XRAY_MAX_PIXELS, QWEN_MAX_PIXELS

    chosen = max_pixels
    if chosen is None:
        current = int(source["max_pixels"])
        chosen = CHEST_XRAY_MAX_PIXELS if current == QWEN_MAX_PIXELS else current
    values = {**source, "max_pixels": chosen, "min_pixels": min(int(source["min_pixels"]), chosen)}
    return PreprocessConfig.from_dict(values).to_dict()


def _write_preprocessor_config(source: Path, out: Path, preprocess: dict) -> None:
    """The source's preprocessor_config.json with our pixel bounds, so transformers' processor
    resizes as we do."""
    path = source / PREPROCESSOR_CONFIG
    if not path.is_file():
        return
    data = json.loads(path.read_text(encoding="utf-8"))
    for key in ("min_pixels", "max_pixels"):
        if key in data:
            data[key] = preprocess[key]
    size = data.get("size")
    if isinstance(size, dict):
        size.update(
            {
                k: preprocess[v]
                for k, v in (("shortest_edge", "min_pixels"), ("longest_edge", "max_pixels"))
                if k in size
            }
        )
    (out / PREPROCESSOR_CONFIG).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _write_tokenizer_config(source: Path, out: Path, added_mask_id: int | None) -> None:
    """The source's tokenizer_config.json, listing an added <|MASK|> among its added tokens
    (transformers' Qwen2 tokenizer takes its added tokens from there, not from tokenizer.json)."""
    from echo.tokenizer import MASK

    path = source / TOKENIZER_CONFIG
    if not path.is_file():
        return
    data = json.loads(path.read_text(encoding="utf-8"))
    added = data.get("added_tokens_decoder")
    if added_mask_id is not None and isinstance(added, dict):
        flags = {"lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
        added[str(added_mask_id)] = {"content": MASK, **flags, "special": True}
    (out / TOKENIZER_CONFIG).write_text(
        json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )


def _check_context(tokenizer, rendered: str, source: Path) -> None:
    """The rendered prompt must tokenize to one image placeholder in the config's ids."""
    ids = tokenizer.encode(rendered)
    placeholder = [tokenizer.vision_start_id, tokenizer.image_pad_id, tokenizer.vision_end_id]
    found = sum(ids[i : i + 3] == placeholder for i in range(len(ids) - 2))
    if found != 1:
        raise UserError(
            f"{source}: the chat prompt's image block does not tokenize to the config's ids "
            f"{placeholder} (vision_start, image_pad, vision_end)"
        )
