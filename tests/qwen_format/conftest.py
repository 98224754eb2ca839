"""A tiny Qwen2.5-VL checkpoint in exactly the released format, written by transformers itself.

`write_qwen_checkpoint(dir)` writes what a site downloads: config.json (transformers' layout),
sharded bf16 safetensors with an index, generation_config.json, preprocessor_config.json (Qwen's
12,845,056 max_pixels), and a Qwen-format tokenizer: a byte-level BPE (Qwen's split regex, NFC)
trained here on a few reports, with Qwen's special tokens as added tokens after the vocabulary and
no <|MASK|>, plus a tokenizer_config.json carrying Qwen2.5-VL's chat template. As in Qwen, the
embedding has more rows than the tokenizer has tokens.

Fixtures (session-scoped, shared with the pipeline tests): `qwen_source_dir` (that checkpoint) and
`qwen_init_dir` (after `echo-train init-from` with its defaults).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.training.conftest import _one_torch_thread  # noqa: F401  (autouse: one torch thread)

REPORTS = [
    "Findings: The lungs are clear. No pleural effusion or pneumothorax. The heart size is normal.\n"
    "Impression: No acute cardiopulmonary process.",
    "Findings: Small left pleural effusion with basilar atelectasis. Cardiomediastinal silhouette is "
    "stable.\nImpression: Small left effusion.",
    "Findings: Right lower lobe consolidation. No pneumothorax. Heart size is mildly enlarged.\n"
    "Impression: Right lower lobe pneumonia. Mild cardiomegaly.",
    "Findings: Endotracheal tube tip 4 cm above the carina. Lungs are clear.\n"
    "Impression: Support device in standard position.",
]
# Qwen2's pre-tokenizer split (tokenizer.json of Qwen2.5-VL).
QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
    r"\s*[\r\n]+|\s+(?!\S)|\s+"
)
# In Qwen's order (151643 ...), after the BPE vocabulary.
QWEN_SPECIALS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# Qwen2.5-VL-7B-Instruct's chat template (as in its chat_template.json).
QWEN_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture "
    "{{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video "
    "{{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
BPE_VOCAB = 320  # bytes + merges; the specials follow
EXTRA_ROWS = 57  # embedding rows past the tokenizer, as Qwen's 152064 vs 151665
QWEN_MAX_PIXELS = 12_845_056
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def write_qwen_tokenizer(directory: Path, template: str = QWEN_CHAT_TEMPLATE) -> dict[str, int]:
    """tokenizer.json + tokenizer_config.json in Qwen's format; returns the special tokens' ids."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tokenizer.train_from_iterator(REPORTS, trainer=trainer)
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIALS])
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    ids = {token: tokenizer.token_to_id(token) for token in QWEN_SPECIALS}
    config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "model_max_length": 32768,
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "errors": "replace",
        "split_special_tokens": False,
        "clean_up_tokenization_spaces": False,
        "added_tokens_decoder": {
            str(i): {"content": t, "special": True, "normalized": False, "lstrip": False, "rstrip": False}
            for t, i in ids.items()
        },
        "chat_template": template,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return ids


def qwen_config(ids: dict[str, int], vocab_size: int, tie: bool = False):
    """tests/model's tiny Qwen2.5-VL shape (2 text layers, a 3-block tower) with Qwen's special ids."""
    from tests.model.conftest import hf_config

    config = hf_config(tie)
    text = config.text_config
    text.vocab_size, text.max_position_embeddings = vocab_size, 2048
    text.bos_token_id, text.eos_token_id, text.pad_token_id = ids["<|endoftext|>"], ids["<|im_end|>"], None
    config.bos_token_id, config.eos_token_id = ids["<|endoftext|>"], ids["<|im_end|>"]
    config.image_token_id, config.video_token_id = ids["<|image_pad|>"], ids["<|video_pad|>"]
    config.vision_start_token_id, config.vision_end_token_id = ids["<|vision_start|>"], ids["<|vision_end|>"]
    return config


def write_qwen_checkpoint(
    directory: Path, *, tie: bool = False, extra_rows: int = EXTRA_ROWS, seed: int = 0
) -> Path:
    """The whole source checkpoint (see the module docstring); `extra_rows=0` makes the embedding
    exactly as large as the tokenizer, so adding <|MASK|> must grow it."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    ids = write_qwen_tokenizer(directory)
    vocab_size = max(ids.values()) + 1 + extra_rows
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(qwen_config(ids, vocab_size, tie)).eval()
    with torch.no_grad():  # no parameter a neutral 0 or 1, logits with a spread
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    model.to(torch.bfloat16).save_pretrained(directory, max_shard_size="100KB", safe_serialization=True)
    generation = {
        "bos_token_id": ids["<|endoftext|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "do_sample": True,
        "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
        "repetition_penalty": 1.05,
        "temperature": 0.1,
        "top_p": 0.001,
        "top_k": 1,
    }
    (directory / "generation_config.json").write_text(json.dumps(generation, indent=2))
    preprocessor = {
        "min_pixels": 3136,
        "max_pixels": QWEN_MAX_PIXELS,
        "patch_size": 14,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": CLIP_MEAN,
        "image_std": CLIP_STD,
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2_5_VLProcessor",
    }
    (directory / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    return directory


@pytest.fixture(scope="session")
def qwen_source_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The transformers-written Qwen2.5-VL checkpoint (do not modify it: tests share it)."""
    return write_qwen_checkpoint(tmp_path_factory.mktemp("qwen_source"))


@pytest.fixture(scope="session")
def qwen_init_dir(qwen_source_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`echo-train init-from` of qwen_source_dir with its defaults (block 8, causal prompts)."""
    from echo.commands.init_from import init_from

    out = tmp_path_factory.mktemp("qwen_init") / "init"
    init_from(qwen_source_dir, out)
    return out
