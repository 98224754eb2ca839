"""A deeper student for stage 3: the teacher's decoder with layers added that start as the identity.

`deepen(model, layers)` returns a model with `layers` decoder layers computing exactly what `model`
computes. Each added layer is a copy of the teacher layer before it with its two output projections
(attention `o_proj`, MLP `down_proj`) set to zero, so it adds nothing to the residual stream until
training moves them; its query, key, value and MLP input weights start where the teacher's layer is,
not at random. The added layers are spread evenly between the teacher's (for 4 -> 6: after layers 1
and 3). The vision tower, embeddings and head are the teacher's.

Why: a one-step student must settle in one forward what the teacher settles over several, and the
students distilled at the teacher's size stay ~20% below its findings F1 whatever the loss or the data
(MODEL_CARD, issue 16). Whether depth is what a single forward lacks was the question this answers:
on the demo data, 8 layers instead of 4 scored the same (MODEL_CARD, "A deeper student").
"""

from __future__ import annotations

import copy
import dataclasses

import torch

from echo.errors import UserError
from echo.model.vlm import EchoVLM


def added_after(teacher_layers: int, layers: int) -> list[int]:
    """For each added layer, the index of the teacher layer it follows (sorted; evenly spread, and
    several after one layer when more than doubling)."""
    extra = layers - teacher_layers
    return [((i + 1) * teacher_layers - 1) // extra for i in range(extra)]


def deepen(model: EchoVLM, layers: int) -> EchoVLM:
    """A copy of `model` with `layers` decoder layers that computes the same function (see module)."""
    have = model.config.num_hidden_layers
    if layers < have:
        raise UserError(f"--student-layers {layers} is fewer than the {have} decoder layers it starts from")
    if layers == have:
        return copy.deepcopy(model)
    config = dataclasses.replace(model.config, num_hidden_layers=layers)
    grown = EchoVLM(config).to(model.dtype)
    source = model.state_dict()
    after = added_after(have, layers)
    order: list[tuple[int, bool]] = []  # (teacher layer, is an added copy) for each new layer
    for index in range(have):
        order.append((index, False))
        order.extend((index, True) for _ in range(after.count(index)))
    state = {k: v for k, v in source.items() if not k.startswith("model.layers.")}
    for new, (old, added) in enumerate(order):
        prefix = f"model.layers.{old}."
        for key, value in source.items():
            if key.startswith(prefix):
                name = key[len(prefix) :]
                zeroed = added and name in ("self_attn.o_proj.weight", "mlp.down_proj.weight")
                state[f"model.layers.{new}.{name}"] = torch.zeros_like(value) if zeroed else value.clone()
    grown.load_state_dict(state)
    return grown
