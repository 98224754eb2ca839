"""`echo.training.deepen`: a deeper student that starts as exactly the teacher."""

from __future__ import annotations

import pytest
import torch

from echo.errors import UserError
from echo.model import EchoVLM
from echo.training.deepen import added_after, deepen


def test_added_layers_are_spread_between_the_teachers():
    assert added_after(4, 6) == [1, 3]
    assert added_after(4, 8) == [0, 1, 2, 3]
    assert added_after(4, 5) == [3]
    assert added_after(2, 3) == [1]
    assert added_after(2, 5) == [0, 1, 1]


def _ids(model: EchoVLM) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(10, model.config.vocab_size, (2, 12), generator=generator)


@pytest.mark.parametrize("layers", [3, 4])
def test_a_deeper_student_computes_the_teachers_function(model, layers):
    with torch.no_grad():  # the random init's projections are small: make every layer matter
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.mul_(20)
            layer.mlp.down_proj.weight.mul_(20)
    grown = deepen(model, layers)
    assert grown.config.num_hidden_layers == layers == len(grown.model.layers)
    assert model.config.num_hidden_layers == 2  # the teacher is not changed
    with torch.no_grad():
        ids = _ids(model)
        expected, got = model.logits_for(ids), grown.logits_for(ids)
        assert not torch.allclose(expected, EchoVLM(model.config).logits_for(ids), atol=1e-3)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    added = grown.model.layers[-1]  # 2 -> 3 and 2 -> 4 both add one after the last teacher layer
    assert not added.self_attn.o_proj.weight.any() and not added.mlp.down_proj.weight.any()
    torch.testing.assert_close(added.self_attn.q_proj.weight, model.model.layers[1].self_attn.q_proj.weight)


def test_the_added_layers_learn(model):
    grown = deepen(model, 3)
    grown.logits_for(_ids(model)).logsumexp(-1).mean().backward()
    added = grown.model.layers[2]
    assert added.self_attn.o_proj.weight.grad.abs().sum() > 0
    assert added.mlp.down_proj.weight.grad.abs().sum() > 0


def test_a_deeper_student_saves_and_loads(model, tmp_path):
    grown = deepen(model, 4)
    grown.save_pretrained(tmp_path / "student")
    loaded = EchoVLM.from_pretrained(tmp_path / "student")
    assert loaded.config.num_hidden_layers == 4
    with torch.no_grad():
        torch.testing.assert_close(loaded.logits_for(_ids(model)), grown.logits_for(_ids(model)))


def test_a_shallower_student_is_refused(model):
    assert deepen(model, 2) is not model
    with pytest.raises(UserError, match="fewer than the 2 decoder layers"):
        deepen(model, 1)
    assert len(deepen(model, 5).model.layers) == 5
