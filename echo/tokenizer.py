"""The report tokenizer: a byte-level BPE with the special tokens block diffusion needs.

One class serves both sources of a vocabulary. A tokenizer trained here puts its special tokens at
fixed ids (0..5, `SPECIAL_TOKENS`); a checkpoint's own ``tokenizer.json`` (e.g. Qwen2.5-VL's) keeps
its ids, and the specials are looked up by token string, or taken from the checkpoint's
``config.json`` / ``generation_config.json`` where those name them, because those files are what
the model was trained with. An id a config names is checked against the model's vocabulary
(config.json's vocab_size: Qwen's embedding has more rows than its tokenizer has tokens).

A plain Qwen2.5-VL tokenizer has no ``<|MASK|>``: it loads (the AR stage needs no mask) and
`ReportTokenizer.mask_id` refuses until `add_mask_token` (run by ``echo-train init-from``) adds it.

The onnxruntime engine imports this module, so it must never import torch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

from echo.errors import UserError

PAD = "<|pad|>"
EOS = "<|endoftext|>"
MASK = "<|MASK|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"

# Position in this tuple is the id a freshly trained tokenizer gives each special token.
SPECIAL_TOKENS: tuple[str, ...] = (PAD, EOS, MASK, VISION_START, VISION_END, IMAGE_PAD)

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILES: tuple[str, ...] = ("config.json", "generation_config.json")  # later files win
# Files of a transformers checkpoint that travel with its tokenizer from stage to stage, so that the
# last stage's checkpoint still loads in transformers with its chat template and processor.
COMPANION_FILES: tuple[str, ...] = (
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "chat_template.json",
    "chat_template.jinja",
    "preprocessor_config.json",
)

_BYTE_ALPHABET_SIZE = 256
MIN_VOCAB_SIZE = _BYTE_ALPHABET_SIZE + len(SPECIAL_TOKENS)


@dataclass(frozen=True)
class SpecialIds:
    pad: int
    eos: int
    mask: int | None  # None: no <|MASK|> yet (a plain Qwen2.5-VL tokenizer); AR needs none
    vision_start: int
    vision_end: int
    image_pad: int
    stop: frozenset[int]  # every id that ends generation: eos plus any extra eos ids in the configs


class ReportTokenizer:
    """A `tokenizers.Tokenizer` plus the ids of its special tokens."""

    def __init__(
        self, tokenizer: Tokenizer, specials: SpecialIds, model_vocab_size: int | None = None
    ) -> None:
        """`model_vocab_size` (config.json's vocab_size) bounds the special ids when the model's
        embedding is larger than the tokenizer; without it the tokenizer's own size does."""
        size = model_vocab_size or tokenizer.get_vocab_size(with_added_tokens=True)
        for name in ("pad", "eos", "mask", "vision_start", "vision_end", "image_pad"):
            value = getattr(specials, name)
            if value is not None and not 0 <= value < size:
                raise UserError(f"special token id {name}={value} is outside the vocabulary (size {size})")
        self._tokenizer = tokenizer
        self._specials = specials
        self.companions: dict[str, bytes] = {}  # COMPANION_FILES read by from_dir, written by save

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> ReportTokenizer:
        """Train a byte-level BPE on report texts; the special tokens get ids 0..5."""
        check_training_options(vocab_size, min_frequency)
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        seen = 0

        def counted() -> Iterable[str]:
            nonlocal seen
            for text in texts:
                seen += 1
                yield text

        tokenizer.train_from_iterator(counted(), trainer=trainer)
        if seen == 0:
            raise UserError("cannot train a tokenizer on an empty corpus")
        ids = [tokenizer.token_to_id(token) for token in SPECIAL_TOKENS]
        assert ids == list(range(len(SPECIAL_TOKENS))), f"special tokens got ids {ids}, expected 0..5"
        return cls(tokenizer, _specials_by_name(tokenizer, [], "the trained tokenizer"))

    @classmethod
    def from_file(cls, path: str | Path) -> ReportTokenizer:
        """Load a ``tokenizer.json``; the specials are found by token string."""
        return cls._load(Path(path), configs=[])

    @classmethod
    def from_dir(cls, path: str | Path) -> ReportTokenizer:
        """Load ``DIR/tokenizer.json``, taking special ids from the dir's config files where given."""
        directory = Path(path)
        if not directory.is_dir():
            raise UserError(f"tokenizer directory {directory} does not exist or is not a directory")
        configs: list[dict[str, Any]] = []
        for name in CONFIG_FILES:
            config = read_json_config(directory / name)
            text_config = config.get("text_config")  # multimodal configs nest the decoder's ids
            configs += [text_config, config] if isinstance(text_config, dict) else [config]
        loaded = cls._load(directory / TOKENIZER_FILE, configs)
        loaded.companions = {
            name: (directory / name).read_bytes() for name in COMPANION_FILES if (directory / name).is_file()
        }
        return loaded

    @classmethod
    def _load(cls, file: Path, configs: list[dict[str, Any]]) -> ReportTokenizer:
        tokenizer = read_tokenizer_file(file)
        source = str(file)
        vocab = [size for c in configs for size in _config_ids(c, "vocab_size", source)]
        model_vocab_size = max([tokenizer.get_vocab_size(with_added_tokens=True), *vocab])
        return cls(tokenizer, _specials_by_name(tokenizer, configs, source), model_vocab_size)

    def save(self, directory: str | Path) -> Path:
        """Write ``DIR/tokenizer.json`` (creating DIR), and the companion files the tokenizer was
        loaded with; returns the tokenizer file's path."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        file = out / TOKENIZER_FILE
        self._tokenizer.save(str(file))
        for name, data in self.companions.items():
            (out / name).write_bytes(data)
        return file

    # ---- use ----------------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, with no special tokens added."""
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        return self._tokenizer.decode(list(ids), skip_special_tokens=skip_special)

    def token_to_id(self, token: str) -> int | None:
        return self._tokenizer.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._tokenizer.id_to_token(token_id)

    @property
    def backend(self) -> Tokenizer:
        """The wrapped `tokenizers.Tokenizer` (for batch encoding or inspection)."""
        return self._tokenizer

    @property
    def specials(self) -> SpecialIds:
        return self._specials

    @property
    def pad_id(self) -> int:
        return self._specials.pad

    @property
    def eos_id(self) -> int:
        return self._specials.eos

    @property
    def stop_ids(self) -> frozenset[int]:
        return self._specials.stop

    @property
    def mask_id(self) -> int:
        """The <|MASK|> id the diffusion stages need; a UserError when there is none yet."""
        if self._specials.mask is None:
            raise UserError(
                f"the tokenizer has no {MASK} token (a plain Qwen2.5-VL checkpoint): "
                "run `echo-train init-from` to add it"
            )
        return self._specials.mask

    @property
    def has_mask(self) -> bool:
        return self._specials.mask is not None

    @property
    def vision_start_id(self) -> int:
        return self._specials.vision_start

    @property
    def vision_end_id(self) -> int:
        return self._specials.vision_end

    @property
    def image_pad_id(self) -> int:
        return self._specials.image_pad

    @property
    def vocab_size(self) -> int:
        """Tokens the tokenizer knows, added tokens included (a model's embedding may be larger)."""
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"ReportTokenizer(vocab_size={self.vocab_size}, specials={self._specials})"


def check_training_options(vocab_size: int, min_frequency: int) -> None:
    """Fail before reading a corpus when the options cannot give a usable tokenizer."""
    if vocab_size < MIN_VOCAB_SIZE:
        raise UserError(
            f"vocab size {vocab_size} is too small: the byte alphabet and special tokens "
            f"alone need {MIN_VOCAB_SIZE}"
        )
    if min_frequency < 1:
        raise UserError(f"min frequency must be at least 1, got {min_frequency}")


def read_tokenizer_file(file: Path) -> Tokenizer:
    """A `tokenizers.Tokenizer` from a tokenizer.json; errors are one line."""
    if not file.is_file():
        raise UserError(f"tokenizer file {file} does not exist")
    try:
        return Tokenizer.from_file(str(file))
    except Exception as error:  # tokenizers raises a bare Exception on bad JSON
        raise UserError(f"{file} is not a tokenizer.json: {str(error).splitlines()[0]}") from None


def add_mask_token(tokenizer: Tokenizer) -> int:
    """Add ``<|MASK|>`` as a special added token (after every existing id) and return its id; a
    tokenizer that has one keeps it. The model's embedding must then have a row for the id:
    ``echo-train init-from`` grows it when the id is past the embedding's last row."""
    existing = tokenizer.token_to_id(MASK)
    if existing is not None:
        return existing
    tokenizer.add_special_tokens([AddedToken(MASK, special=True, normalized=False)])
    added = tokenizer.token_to_id(MASK)
    assert added is not None, f"tokenizers did not add {MASK}"
    return added


def read_json_config(file: Path) -> dict[str, Any]:
    """A JSON object file of a checkpoint ({} when absent); bad JSON is a one-line UserError."""
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{file} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise UserError(f"{file} must hold a JSON object")
    return data


def _config_ids(config: dict[str, Any], key: str, source: str) -> list[int]:
    """The ids a config gives for ``key`` (an int or a list of ints); [] when absent or null."""
    value = config.get(key)
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise UserError(f"{source}: {key} must be an integer or a list of integers, got {value!r}")
    return values


def _specials_by_name(tokenizer: Tokenizer, configs: list[dict[str, Any]], source: str) -> SpecialIds:
    """Resolve each special id: the last config naming it wins, else the token string's id.

    generation_config.json comes after config.json, as in transformers; every eos id either file
    lists (Qwen's chat models stop on ``<|im_end|>`` and ``<|endoftext|>``) is a stop id.
    """

    def pick(config_key: str, *tokens: str, required: bool = True) -> int | None:
        for config in reversed(configs):
            from_config = _config_ids(config, config_key, source)
            if from_config:
                return from_config[0]
        for token in tokens:
            token_id = tokenizer.token_to_id(token)
            if token_id is not None:
                return token_id
        if not required:
            return None
        names = " or ".join(repr(t) for t in tokens)
        raise UserError(f"{source} has no {names} token and no {config_key} in its config")

    def need(config_key: str, *tokens: str) -> int:
        found = pick(config_key, *tokens)
        assert found is not None
        return found

    eos = need("eos_token_id", EOS)
    stop = frozenset([eos, *(i for c in configs for i in _config_ids(c, "eos_token_id", source))])
    return SpecialIds(
        pad=need("pad_token_id", PAD, EOS),
        eos=eos,
        mask=pick("mask_token_id", MASK, required=False),
        vision_start=need("vision_start_token_id", VISION_START),
        vision_end=need("vision_end_token_id", VISION_END),
        image_pad=need("image_token_id", IMAGE_PAD),
        stop=stop,
    )
