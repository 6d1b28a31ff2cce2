"""torch.compile (inductor) trains the same as eager: model.compile=true on CPU."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from hih_lightning.config import CONFIG_DIR, instantiate_node

pytestmark = pytest.mark.slow

STEPS = 3
# Inductor fuses and reorders fp32 reductions, so values differ from eager in the last bits;
# measured here: losses within ~1e-6 relative, parameters within ~1e-6 after 3 Adam steps.
LOSS_RTOL = 1e-4
PARAM_ATOL = 1e-4


def _model(compile: bool):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        # the ablation budget's net: hih_cpu at 64 px, 98 landmarks, 4x4 decimal heatmaps
        cfg = compose("train", overrides=["experiment=synthetic_ablation_64",
                                          f"model.compile={compile}"])
    model = instantiate_node(cfg, "model")
    model.log_dict = lambda *args, **kwargs: None  # no trainer attached
    return model


def _train(model, batches) -> list[float]:
    model.train()
    optimizer = model.configure_optimizers()["optimizer"]
    losses = []
    for i, batch in enumerate(batches):
        optimizer.zero_grad()
        loss = model.training_step(batch, i)  # forward, codec encode, loss: the module's own
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_compiled_training_matches_eager():
    torch.manual_seed(0)
    eager, compiled = _model(False), _model(True)
    assert compiled.forward_net is not compiled.net  # the torch.compile wrapper
    compiled.net.load_state_dict(eager.net.state_dict())  # same initial weights
    size = eager.input_size
    batches = [{"image": torch.randint(0, 256, (4, 3, size, size), dtype=torch.uint8),
                "landmarks": torch.rand(4, 98, 2) * (size - 1)} for _ in range(STEPS)]
    expected = _train(eager, batches)
    got = _train(compiled, batches)
    assert got == pytest.approx(expected, rel=LOSS_RTOL)
    state, compiled_state = eager.net.state_dict(), compiled.net.state_dict()
    worst = max((state[k].double() - compiled_state[k].double()).abs().max().item()
                for k in state if state[k].is_floating_point())
    assert worst < PARAM_ATOL, f"largest parameter difference after {STEPS} steps: {worst:.3g}"
