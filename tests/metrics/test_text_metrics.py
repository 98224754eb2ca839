import math

import pytest

from echo.metrics.bleu import corpus_bleu
from echo.metrics.cider import cider_d
from echo.metrics.repetition import repeated_ngram_share, repetition
from echo.metrics.rouge import lcs_length, rouge_l, rouge_l_pair
from echo.metrics.speed import decoding_speed
from echo.metrics.text import words

REPORT = "FINDINGS: Small left pleural effusion. No pneumothorax.\nIMPRESSION: Left effusion."


def test_words_drop_case_and_punctuation():
    assert words("No  Pleural-effusion; 1.5 cm.") == ["no", "pleural", "effusion", "1", "5", "cm"]


# ---- ROUGE-L ------------------------------------------------------------------------------------


def test_rouge_l_identical_and_disjoint():
    assert rouge_l_pair(REPORT, REPORT.upper()) == 1.0
    assert rouge_l_pair("no pleural effusion", "large right pneumothorax") == 0.0
    assert rouge_l_pair("", REPORT) == 0.0


def test_rouge_l_worked_examples():
    # LCS "the cat on the mat" = 5 of 6 words each side: P = R = 5/6
    assert (
        lcs_length(["the", "cat", "sat", "on", "the", "mat"], ["the", "cat", "is", "on", "the", "mat"]) == 5
    )
    assert rouge_l_pair("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    # LCS "a c": P = 2/4, R = 2/3, F1 = 2PR / (P + R) = 4/7
    assert rouge_l_pair("a b c d", "a c e") == pytest.approx(4 / 7)
    assert rouge_l(["a b c d", "x"], ["a c e", "x"]) == pytest.approx((4 / 7 + 1) / 2)


def test_corpus_length_mismatch_is_a_value_error():
    for metric in (rouge_l, cider_d, corpus_bleu):
        with pytest.raises(ValueError, match="2 predictions but 1 references"):
            metric(["a", "b"], ["a"])


# ---- BLEU-4 -------------------------------------------------------------------------------------


def test_bleu_identical_is_one_and_disjoint_is_zero():
    assert corpus_bleu([REPORT, "no pneumothorax"], [REPORT, "no pneumothorax"]).score == pytest.approx(1.0)
    assert corpus_bleu(["no pleural effusion"], ["large right pneumothorax"]).score == 0.0
    assert corpus_bleu([""], [REPORT]).score == 0.0


def test_bleu_worked_example_with_add_one_smoothing():
    # unigrams 5/6; bigrams 3/5 -> (3+1)/(5+1); trigrams 1/4 -> 2/5; 4-grams 0/3 -> 1/4; no brevity penalty
    result = corpus_bleu(["the cat sat on the mat"], ["the cat is on the mat"])
    assert result.precisions == pytest.approx((5 / 6, 4 / 6, 2 / 5, 1 / 4))
    assert result.brevity_penalty == 1.0
    assert result.score == pytest.approx((5 / 6 * 4 / 6 * 2 / 5 * 1 / 4) ** 0.25)


def test_bleu_brevity_penalty_uses_corpus_lengths():
    # 2 predicted words against 6: BP = exp(1 - 6/2); every (smoothed) precision is 1
    result = corpus_bleu(["the cat"], ["the cat sat on the mat"])
    assert (result.prediction_length, result.reference_length) == (2, 6)
    assert result.score == pytest.approx(math.exp(-2))


def test_bleu_sums_counts_over_the_corpus_before_dividing():
    # per-pair unigram precisions 1/1 and 0/3 would average 0.5; corpus-level it is 1/4
    result = corpus_bleu(["x", "a b c"], ["x", "d e f"])
    assert result.precisions[0] == pytest.approx(1 / 4)


# ---- CIDEr-D ------------------------------------------------------------------------------------


def test_cider_d_worked_example():
    # two references, so idf = log 2 for every n-gram (df 1; unseen n-grams get df 1 too).
    # pair 1 identical: cosine 1 for n = 1, 2; no 3-, 4-grams: (1 + 1 + 0 + 0) / 4 * 10 = 5
    # pair 2 "c e" vs "c d": unigram cosine 1/2, bigram 0: (1/2) / 4 * 10 = 1.25
    assert cider_d(["a b", "c e"], ["a b", "c d"]) == pytest.approx((5 + 1.25) / 2)


def test_cider_d_clips_and_penalises_length():
    # "a b a b" vs "a b": unigram weights (2, 2) clipped to (1, 1): 2 / (sqrt(8) sqrt(2)) = 1/2;
    # bigrams {"a b": 2, "b a": 1} vs {"a b": 1}: 1 / sqrt(5); length 3 vs 1 bigrams: exp(-4 / 72)
    expected_first = 10 * (0.5 + 1 / math.sqrt(5)) / 4 * math.exp(-4 / 72)
    assert cider_d(["a b a b", "c d"], ["a b", "c d"]) == pytest.approx((expected_first + 5) / 2)


def test_cider_d_degenerate_corpora():
    assert cider_d([], []) == 0.0
    assert cider_d(["a b"], ["a b"]) == 0.0  # one reference: every idf is log 1 = 0
    assert cider_d(["x y", "z"], ["a b", "c d"]) == 0.0


# ---- repetition and speed -----------------------------------------------------------------------


def test_repetition_counts_repeated_4grams():
    looping = "no effusion seen here no effusion seen here no effusion seen here"  # 12 words, 9 4-grams
    assert repeated_ngram_share(looping) == pytest.approx(1 - 4 / 9)
    assert repeated_ngram_share("no pleural effusion") == 0.0  # fewer than 4 words
    twice = "a b c d a b c d"  # "a b c d" twice only
    result = repetition([looping, REPORT, twice, ""])
    assert result.repeated_ngram_share == pytest.approx((1 - 4 / 9 + 0 + (1 - 4 / 5) + 0) / 4)
    assert result.reports_with_repeats == pytest.approx(1 / 4)
    assert repetition([]).reports_with_repeats == 0.0


def test_speed_is_a_ratio_of_sums():
    speed = decoding_speed([80, 40], [10, 40], [1.0, 3.0])
    assert speed.tokens_per_forward == pytest.approx(120 / 50)
    assert speed.tokens_per_second == pytest.approx(30.0)
    assert speed.timed_reports == 2
    empty = decoding_speed([], [], [])
    assert (empty.tokens_per_forward, empty.tokens_per_second, empty.timed_reports) == (None, None, 0)
    with pytest.raises(ValueError, match="one entry per report"):
        decoding_speed([1], [1, 2], [1.0])
