import pytest

from echo.errors import UserError
from echo.metrics.evaluate import evaluate

REFS = [
    {
        "id": "s1",
        "report": "FINDINGS: Small left pleural effusion. No pneumothorax.\nIMPRESSION: Left pleural effusion.",
        "labels": {"pleural_effusion": "positive", "pneumothorax": "negative"},
    },
    {
        "id": "s2",
        "report": "FINDINGS: The heart is enlarged. Lungs are clear.\nIMPRESSION: Cardiomegaly.",
        "labels": {"cardiomegaly": "positive"},
    },
    {"id": "s3", "report": "FINDINGS: Lungs are clear.\nIMPRESSION: Normal.", "labels": {}},
]


def _pred(identifier, report, tokens=16, forwards=2, seconds=0.5):
    return {"id": identifier, "report": report, "tokens": tokens, "forwards": forwards, "seconds": seconds}


def test_all_metrics_for_a_perfect_run():
    preds = [_pred(r["id"], r["report"]) for r in REFS]
    result = evaluate(preds, REFS, with_semscore=False)
    assert (result["studies"], result["predictions"], result["evaluated"], result["missing_predictions"]) == (
        3,
        3,
        3,
        0,
    )
    assert result["positive_f1"]["micro"] == 1.0
    assert result["positive_f1"]["per_class"]["cardiomegaly"] == {
        "precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1, "predicted": 1,
    }  # fmt: skip
    assert result["rouge_l"] == pytest.approx(1.0)
    assert result["bleu_4"] == pytest.approx(1.0)
    assert result["cider_d"] > 5
    assert result["semscore_minilm"] is None
    assert result["repetition"] == {"repeated_4gram_share": 0.0, "reports_with_4gram_3x": 0.0}
    assert result["positive_f1"]["micro_precision"] == result["positive_f1"]["micro_recall"] == 1.0
    assert result["normal_studies"] == {"studies": 1, "false_positives_per_study": 0.0, "called_normal": 1.0}
    assert result["duplicate_words"]["rate"] == 0.0 and result["duplicate_words"]["words"] > 0
    assert result["both_sections"] == 1.0
    assert result["fluency"] is None
    assert result["tokens_per_forward"] == pytest.approx(8.0)
    assert result["tokens_per_second"] == pytest.approx(48 / 1.5)
    assert result["reference_labels"] == "manifest"


def test_missing_predictions_are_counted_and_left_out():
    loop = "Lungs are clear. Lungs are clear. Lungs are clear. Lungs are clear."
    result = evaluate([_pred("s2", loop, tokens=30, forwards=30, seconds=1.0)], REFS, with_semscore=False)
    assert result["evaluated"] == 1
    assert result["missing_predictions"] == 2
    assert result["missing_ids"] == ["s1", "s3"]
    assert result["positive_f1"]["per_class"]["cardiomegaly"]["recall"] == 0.0
    assert result["repetition"]["reports_with_4gram_3x"] == 1.0
    assert result["tokens_per_forward"] == 1.0


def test_a_broken_run_shows_in_precision_duplicates_and_sections():
    preds = [
        _pred(
            "s1",
            "FINDINGS: Small left pleural effusion. No pneumothorax.\nIMPRESSION: Left pleural effusion.",
        ),
        _pred("s2", "FINDINGS: The the heart is enlarged. Right pneumothorax.\nIMPRESSION: -"),
        _pred(
            "s3", "FINDINGS: Lungs are clear. Large right pneumothorax, moderate edema.\nIMPRESSION: Normal.."
        ),
    ]
    result = evaluate(preds, REFS, with_semscore=False)
    f1 = result["positive_f1"]
    assert f1["micro_recall"] == 1.0  # both true findings named
    assert f1["micro_precision"] == pytest.approx(2 / 5)  # three false: pneumothorax twice, edema
    assert result["normal_studies"]["false_positives_per_study"] == 2.0  # s3 is the normal study
    assert result["normal_studies"]["called_normal"] == 0.0
    assert result["duplicate_words"]["duplicates"] == 1
    assert result["duplicate_words"]["reports_with_duplicates"] == pytest.approx(1 / 3)
    assert result["both_sections"] == pytest.approx(2 / 3)
    assert result["broken_sentences"] == {"reports_with_broken": pytest.approx(1 / 3), "broken": 1}  # ".."


def test_reference_labels_fall_back_to_the_labeler():
    refs = [
        {"id": "a", "report": "Right pneumothorax."},
        {"id": "b", "report": "No pneumothorax.", "labels": {}},
    ]
    preds = [{"id": "a", "report": "Right pneumothorax."}, {"id": "b", "report": "Right pneumothorax."}]
    result = evaluate(preds, refs, with_semscore=False)
    assert result["reference_labels"] == "mixed"
    assert result["positive_f1"]["per_class"]["pneumothorax"]["precision"] == 0.5
    assert result["tokens_per_forward"] is None and result["timed_reports"] == 0


def test_progress_stages_cover_the_work():
    calls: dict[str, list[int]] = {}

    def stage(description, total):
        calls[description] = [total, 0]
        return lambda n: calls[description].__setitem__(1, calls[description][1] + n)

    evaluate([_pred(r["id"], r["report"]) for r in REFS], REFS, with_semscore=False, progress=stage)
    assert calls and all(total == done for total, done in calls.values())
    assert calls["labelling findings"] == [3, 3]


@pytest.mark.parametrize(
    ("preds", "refs", "message"),
    [
        ([_pred("s9", "x")], REFS, r"1 prediction id\(s\) are not in the manifest, e.g. 's9'"),
        ([_pred("s1", "x"), _pred("s1", "y")], REFS, r"predictions: id 's1' appears twice \(rows 1 and 2\)"),
        ([], REFS, "the predictions file has no rows"),
        ([_pred("s1", "x")], [], "the manifest has no rows"),
        ([{"report": "x"}], REFS, 'predictions row 1: "id" must be a non-empty string'),
        ([{"id": "s1"}], REFS, 'predictions row 1: "report" must be a string'),
        (
            [_pred("s1", "x", tokens=-1)],
            REFS,
            'predictions row 1: "tokens" must be a non-negative integer, got -1',
        ),
        ([_pred("s1", "x", forwards=2.5)], REFS, '"forwards" must be a non-negative integer, got 2.5'),
        ([_pred("s1", "x", seconds="fast")], REFS, "\"seconds\" must be a non-negative number, got 'fast'"),
        (
            [_pred("s1", "x")],
            [{"id": "s1", "report": "x", "labels": ["positive"]}],
            '"labels" must be an object',
        ),
        (
            [_pred("s1", "x")],
            [{"id": "s1", "report": "x", "labels": {"fracture": "positive"}}],
            "manifest row 1: unknown finding 'fracture' in labels",
        ),
        (
            [_pred("s1", "x")],
            [{"id": "s1", "report": "x", "labels": {"nodule": "yes"}}],
            "manifest row 1: label 'yes' of nodule is not positive, negative or uncertain",
        ),
        ([_pred("s1", "x")], [REFS[0], REFS[0]], r"manifest: id 's1' appears twice \(rows 1 and 2\)"),
        (
            [{**_pred("s1", "x"), "gate": "sent"}],
            REFS,
            "predictions row 1: \"gate\" must be one of passed, redecoded, held, got 'sent'",
        ),
        (
            [{**_pred("s1", "x"), "gate": "held"}],
            REFS,
            "no prediction to score: every matched draft was held by the draft gate",
        ),
    ],
)
def test_bad_rows_are_user_errors(preds, refs, message):
    with pytest.raises(UserError, match=message):
        evaluate(preds, refs, with_semscore=False)


def test_numeric_ids_match_string_ids():
    result = evaluate(
        [{"id": 7, "report": "Cardiomegaly."}], [{"id": "7", "report": "Cardiomegaly."}], with_semscore=False
    )
    assert result["evaluated"] == 1


def test_drafts_the_gate_held_are_not_scored_but_their_forwards_count():
    """A held draft was never sent: quality is over the sent drafts, speed over every forward spent."""
    wrong = "FINDINGS: Large right pneumothorax.\nIMPRESSION: Pneumothorax."
    preds = [
        {**_pred("s1", REFS[0]["report"], tokens=16, forwards=2), "gate": "passed"},
        {**_pred("s2", REFS[1]["report"], tokens=16, forwards=18), "gate": "redecoded"},
        {**_pred("s3", wrong, tokens=16, forwards=20), "gate": "held"},
    ]
    result = evaluate(preds, REFS, with_semscore=False)
    assert result["gate"] == {"passed": 1, "redecoded": 1, "held": 1}
    assert result["evaluated"] == 2 and result["missing_predictions"] == 0
    assert result["positive_f1"]["micro_precision"] == 1.0  # the held pneumothorax is not counted
    assert result["tokens_per_forward"] == pytest.approx(48 / 40)
    assert evaluate(preds[:2], REFS, with_semscore=False)["gate"] == {"passed": 1, "redecoded": 1, "held": 0}
    assert evaluate([_pred("s1", "x")], REFS, with_semscore=False)["gate"] is None
