import json

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from echo.errors import UserError
from echo.tokenizer import SPECIAL_TOKENS, ReportTokenizer

REPORTS = [
    "FINDINGS: The lungs are clear. No pleural effusion or pneumothorax. Heart size is normal.\n"
    "IMPRESSION: No acute cardiopulmonary process.",
    "FINDINGS: Small left pleural effusion with blunting of the left costophrenic angle. No pneumothorax.\n"
    "IMPRESSION: Small left pleural effusion.",
    "FINDINGS: Heart size is enlarged. Mild pulmonary edema. Endotracheal tube 4.5 cm above the carina.\n"
    "IMPRESSION: Cardiomegaly with mild pulmonary edema.",
    "FINDINGS: 1.5 cm nodule in the right upper lobe.  Right lower lobe consolidation.\n"
    "IMPRESSION: Right lower lobe consolidation; right upper lobe nodule.",
    "FINDINGS: Right internal jugular central venous catheter tip in the SVC. Pacemaker leads in place.\n"
    "IMPRESSION: Support devices as above.",
] * 4


@pytest.fixture(scope="module")
def trained() -> ReportTokenizer:
    return ReportTokenizer.train(REPORTS, vocab_size=400)


def test_trained_specials_have_the_fixed_ids(trained):
    assert [trained.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4, 5]
    assert (trained.pad_id, trained.eos_id, trained.mask_id) == (0, 1, 2)
    assert (trained.vision_start_id, trained.vision_end_id, trained.image_pad_id) == (3, 4, 5)
    assert trained.stop_ids == {1}
    assert len(trained) == trained.vocab_size <= 400


@pytest.mark.parametrize(
    "text",
    [
        *REPORTS[:5],
        "Text the corpus never saw: Pneumomediastinum! 37.2 °C, naïve — tab\there  double  spaces.",
        " leading and trailing spaces \n",
        "",
    ],
)
def test_decode_of_encode_is_the_text(trained, text):
    ids = trained.encode(text)
    assert trained.decode(ids) == text


def test_encode_adds_no_specials_and_compresses_report_text(trained):
    ids = trained.encode(REPORTS[0])
    assert not set(ids) & set(range(6))
    assert len(ids) < len(REPORTS[0].encode()) / 2  # merges learnt, not bytes


def test_decode_skips_specials_unless_asked(trained):
    ids = [
        trained.vision_start_id,
        trained.image_pad_id,
        trained.vision_end_id,
        *trained.encode("No effusion."),
    ]
    ids += [trained.mask_id, trained.eos_id, trained.pad_id]
    assert trained.decode(ids) == "No effusion."
    kept = trained.decode(ids, skip_special=False)
    assert kept.startswith("<|vision_start|><|image_pad|><|vision_end|>No effusion.")
    assert kept.endswith("<|MASK|><|endoftext|><|pad|>")


def test_save_then_load_gives_the_same_tokenizer(trained, tmp_path):
    file = trained.save(tmp_path / "new" / "dir")
    assert file.name == "tokenizer.json"
    for loaded in (ReportTokenizer.from_dir(file.parent), ReportTokenizer.from_file(file)):
        assert loaded.specials == trained.specials
        assert loaded.encode(REPORTS[1]) == trained.encode(REPORTS[1])
        assert loaded.vocab_size == trained.vocab_size


def test_training_option_errors():
    with pytest.raises(UserError, match="vocab size 100 is too small: .* need 262"):
        ReportTokenizer.train(REPORTS, vocab_size=100)
    with pytest.raises(UserError, match="min frequency must be at least 1, got 0"):
        ReportTokenizer.train(REPORTS, vocab_size=300, min_frequency=0)
    with pytest.raises(UserError, match="cannot train a tokenizer on an empty corpus"):
        ReportTokenizer.train([], vocab_size=300)


def _checkpoint_style_tokenizer(tmp_path, specials: list[str]):
    """A byte-level BPE whose special tokens sit after the vocabulary, as in a Qwen2.5-VL checkpoint."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tokenizer.train_from_iterator(REPORTS, trainer=trainer)
    tokenizer.add_special_tokens(specials)
    tmp_path.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    return tokenizer


QWEN_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|MASK|>",
]


def test_checkpoint_tokenizer_specials_found_by_name(tmp_path):
    backend = _checkpoint_style_tokenizer(tmp_path, QWEN_SPECIALS)
    loaded = ReportTokenizer.from_dir(tmp_path)
    ids = {t: backend.token_to_id(t) for t in QWEN_SPECIALS}
    assert min(ids.values()) > 250  # not the fixed 0..5 of our own tokenizer
    assert loaded.eos_id == ids["<|endoftext|>"]
    assert loaded.pad_id == ids["<|endoftext|>"]  # no <|pad|>: Qwen pads with <|endoftext|>
    assert loaded.mask_id == ids["<|MASK|>"]
    assert loaded.vision_start_id == ids["<|vision_start|>"]
    assert loaded.vision_end_id == ids["<|vision_end|>"]
    assert loaded.image_pad_id == ids["<|image_pad|>"]
    assert loaded.decode(loaded.encode(REPORTS[2])) == REPORTS[2]


def test_checkpoint_configs_name_eos_and_pad(tmp_path):
    backend = _checkpoint_style_tokenizer(tmp_path, QWEN_SPECIALS)
    im_end, endoftext = backend.token_to_id("<|im_end|>"), backend.token_to_id("<|endoftext|>")
    (tmp_path / "config.json").write_text(
        json.dumps({"eos_token_id": im_end, "image_token_id": backend.token_to_id("<|image_pad|>")})
    )
    (tmp_path / "generation_config.json").write_text(
        json.dumps({"eos_token_id": [im_end, endoftext], "pad_token_id": endoftext})
    )
    loaded = ReportTokenizer.from_dir(tmp_path)
    assert loaded.eos_id == im_end
    assert loaded.stop_ids == {im_end, endoftext}
    assert loaded.pad_id == endoftext
    # from_file reads only the tokenizer.json: eos falls back to the token string
    assert ReportTokenizer.from_file(tmp_path / "tokenizer.json").eos_id == endoftext


def test_nested_text_config_ids_are_read(tmp_path):
    backend = _checkpoint_style_tokenizer(tmp_path, QWEN_SPECIALS)
    im_end = backend.token_to_id("<|im_end|>")
    (tmp_path / "config.json").write_text(json.dumps({"text_config": {"eos_token_id": im_end}}))
    assert ReportTokenizer.from_dir(tmp_path).eos_id == im_end


def test_checkpoint_without_mask_token_loads_and_refuses_only_the_mask(tmp_path):
    backend = _checkpoint_style_tokenizer(tmp_path, [t for t in QWEN_SPECIALS if t != "<|MASK|>"])
    loaded = ReportTokenizer.from_dir(tmp_path)  # enough for the AR stage
    assert loaded.eos_id == backend.token_to_id("<|endoftext|>") and not loaded.has_mask
    with pytest.raises(UserError, match=r"has no <\|MASK\|> token .*: run `echo-train init-from` to add it"):
        _ = loaded.mask_id


def test_mask_id_from_the_config_is_checked_against_the_model_vocabulary(tmp_path):
    backend = _checkpoint_style_tokenizer(tmp_path, [t for t in QWEN_SPECIALS if t != "<|MASK|>"])
    size = backend.get_vocab_size(with_added_tokens=True)
    # Qwen's embedding has rows past the tokenizer: a mask id there is valid for the model
    (tmp_path / "config.json").write_text(
        json.dumps({"text_config": {"vocab_size": size + 8}, "mask_token_id": size + 7})
    )
    assert ReportTokenizer.from_dir(tmp_path).mask_id == size + 7
    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": size + 8, "mask_token_id": size + 8}))
    with pytest.raises(
        UserError, match=rf"special token id mask={size + 8} is outside the vocabulary \(size {size + 8}\)"
    ):
        ReportTokenizer.from_dir(tmp_path)


def test_add_mask_token_appends_one_special_token_once(tmp_path):
    from echo.tokenizer import add_mask_token

    backend = _checkpoint_style_tokenizer(tmp_path, [t for t in QWEN_SPECIALS if t != "<|MASK|>"])
    size = backend.get_vocab_size(with_added_tokens=True)
    assert add_mask_token(backend) == size
    assert add_mask_token(backend) == size  # idempotent
    assert backend.get_vocab_size(with_added_tokens=True) == size + 1
    assert backend.encode("a <|MASK|> b", add_special_tokens=False).ids.count(size) == 1
    assert backend.decode([size], skip_special_tokens=True) == ""


def test_mask_id_may_come_from_the_config(tmp_path):
    backend = _checkpoint_style_tokenizer(tmp_path, [t for t in QWEN_SPECIALS if t != "<|MASK|>"])
    (tmp_path / "config.json").write_text(json.dumps({"mask_token_id": backend.token_to_id("<|im_start|>")}))
    assert ReportTokenizer.from_dir(tmp_path).mask_id == backend.token_to_id("<|im_start|>")


def test_config_id_outside_the_vocabulary_is_an_error(tmp_path):
    _checkpoint_style_tokenizer(tmp_path, QWEN_SPECIALS)
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": 151645}))
    with pytest.raises(
        UserError, match=r"special token id eos=151645 is outside the vocabulary \(size \d+\)"
    ):
        ReportTokenizer.from_dir(tmp_path)


@pytest.mark.parametrize(
    ("config_text", "message"),
    [
        ("{not json", "config.json is not valid JSON"),
        ("[1, 2]", "config.json must hold a JSON object"),
        ('{"eos_token_id": "two"}', "eos_token_id must be an integer or a list of integers, got 'two'"),
        ('{"eos_token_id": []}', r"eos_token_id must be an integer or a list of integers, got \[\]"),
    ],
)
def test_bad_config_files_are_errors(tmp_path, config_text, message):
    _checkpoint_style_tokenizer(tmp_path, QWEN_SPECIALS)
    (tmp_path / "config.json").write_text(config_text)
    with pytest.raises(UserError, match=message):
        ReportTokenizer.from_dir(tmp_path)


def test_missing_or_broken_tokenizer_files_are_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist or is not a directory"):
        ReportTokenizer.from_dir(tmp_path / "absent")
    with pytest.raises(UserError, match=r"tokenizer file .*tokenizer.json does not exist"):
        ReportTokenizer.from_dir(tmp_path)
    broken = tmp_path / "tokenizer.json"
    broken.write_text('{"version": "1.0"}')
    with pytest.raises(UserError, match="is not a tokenizer.json: "):
        ReportTokenizer.from_file(broken)


def test_a_checkpoints_companion_files_travel_with_its_tokenizer(trained, tmp_path):
    """A stage loads the tokenizer from its input checkpoint and saves it with its output: the
    chat template and processor files go along byte for byte; unknown files and a trained
    tokenizer's (none) do not."""
    source = tmp_path / "source"
    trained.save(source)
    files = {
        "tokenizer_config.json": b'{"chat_template": "{{ messages }}"}',
        "chat_template.jinja": b"{% for m in messages %}{{ m }}{% endfor %}",
        "preprocessor_config.json": b'{"max_pixels": 2250000}',
    }
    for name, data in files.items():
        (source / name).write_bytes(data)
    (source / "notes.txt").write_text("not a checkpoint file")
    ReportTokenizer.from_dir(source).save(tmp_path / "stage")
    assert {p.name for p in (tmp_path / "stage").iterdir()} == {"tokenizer.json", *files}
    assert all((tmp_path / "stage" / name).read_bytes() == data for name, data in files.items())
    trained.save(tmp_path / "fresh")
    assert [p.name for p in (tmp_path / "fresh").iterdir()] == ["tokenizer.json"]
