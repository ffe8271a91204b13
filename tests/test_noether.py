"""Noether tailoring of the SVG world model: embedding, losses, tailoring, meta-gradient."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import Tensor

from noether_control.models.checkpoint import save_checkpoint
from noether_control.models.svg import SVGConfig, SVGWorldModel
from noether_control.noether.bundle import load_bundle
from noether_control.noether.config import NoetherConfig
from noether_control.noether.embedding import ConservedEmbedding, EmbeddingConfig
from noether_control.noether.losses import conservation_loss
from noether_control.noether.meta import NoetherModule, load_noether
from noether_control.noether.tailoring import TailoringConfig
from noether_control.training.warm_start import extend_optimizer_state

N_PAST, HORIZON = 2, 4


def tiny_model(dtype: torch.dtype = torch.float32, **changes: object) -> SVGWorldModel:
    torch.manual_seed(0)
    config = SVGConfig(image_size=32, channels=1, action_dim=1, width=4, g_dim=16, rnn_size=8,
                       rnn_layers=1, action_embed_dim=2)
    model = SVGWorldModel(replace(config, **changes))
    # As after training: the change head starts at zero, which would make the LSTM (and so the
    # default tailored LSTM modulation) invisible in the prediction.
    torch.nn.init.normal_(model.predictor_out.weight, std=0.1)
    return model.to(dtype)


def noether_for(model: SVGWorldModel, dtype: torch.dtype = torch.float32, *,
                embedding: str = "hidden", tailored: str = "lstm", steps: int = 1,
                lr: float = 0.5, optimizer: str = "sgd", learnable_lr: bool = False,
                action_work: bool = False, **changes: object) -> NoetherModule:
    torch.manual_seed(1)
    inner = TailoringConfig(steps=steps, lr=lr, optimizer=optimizer, learnable_lr=learnable_lr)
    shape = EmbeddingConfig(input=embedding, dim=4, width=8, action_work=action_work)
    config = NoetherConfig(enabled=True, embedding=shape, tailored=tailored, inner=inner,
                           **changes)
    noether = NoetherModule(config, model.config).to(dtype)
    if action_work:
        # A fresh work head is zero (g equals the action-blind one); give it a say.
        torch.nn.init.normal_(noether.embedding.work.weight, std=0.1)
    return noether


def window(batch: int = 3, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(2)
    frames = torch.rand(batch, N_PAST + HORIZON, 1, 32, 32, generator=generator, dtype=dtype)
    actions = torch.rand(batch, N_PAST + HORIZON, 1, generator=generator, dtype=dtype) * 4 - 2
    return frames, actions


# ---------------------------------------------------------------------------- losses
def test_conservation_losses_on_hand_made_embeddings() -> None:
    # Example 0 drifts 0 → 1 → 3 along one axis; example 1 is constant.
    embeddings = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]],
                               [[2.0, 5.0], [2.0, 5.0], [2.0, 5.0]]])
    first = conservation_loss(embeddings, "first")            # mean(1², 3²)
    consecutive = conservation_loss(embeddings, "consecutive")  # mean(1², 2²)
    both = conservation_loss(embeddings, "both")
    torch.testing.assert_close(first, torch.tensor([5.0, 0.0]))
    torch.testing.assert_close(consecutive, torch.tensor([2.5, 0.0]))
    torch.testing.assert_close(both, first + consecutive)
    # A 2-d displacement counts with its squared Euclidean norm.
    diagonal = torch.tensor([[[0.0, 0.0], [3.0, 4.0]]])
    torch.testing.assert_close(conservation_loss(diagonal, "first"), torch.tensor([25.0]))


def test_conservation_loss_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="expected one of"):
        conservation_loss(torch.zeros(1, 3, 2), "last")
    with pytest.raises(ValueError, match="T >= 2"):
        conservation_loss(torch.zeros(1, 1, 2))
    with pytest.raises(ValueError, match="T >= 2"):
        conservation_loss(torch.zeros(3, 2))


# ---------------------------------------------------------------------------- embedding
@pytest.mark.parametrize(
    ("kind", "sequence", "steps"),
    [("frames", torch.rand(2, 5, 3, 16, 16), 4), ("hidden", torch.rand(2, 5, 8), 5),
     ("state", torch.rand(2, 5, 3), 5)],
)
def test_embedding_inputs_and_shapes(kind: str, sequence: Tensor, steps: int) -> None:
    embedding = ConservedEmbedding(EmbeddingConfig(input=kind, dim=6, width=8), channels=3,
                                   image_size=16, hidden_size=8, state_dim=3)
    out = embedding(sequence)
    assert out.shape == (2, steps, 6)
    # Every step is embedded on its own: changing the last step changes only the last output.
    changed = sequence.clone()
    changed[:, -1] = changed[:, -1] + 0.5
    torch.testing.assert_close(embedding(changed)[:, :-1], out[:, :-1])
    assert not torch.allclose(embedding(changed)[:, -1], out[:, -1])


def test_frame_embedding_sees_both_frames_of_a_pair() -> None:
    embedding = ConservedEmbedding(EmbeddingConfig(input="frames", dim=4, width=4), channels=1,
                                   image_size=8)
    frames = torch.rand(1, 2, 1, 8, 8)
    swapped = frames.flip(1)  # same frames, other order: a velocity-aware g tells them apart
    assert not torch.allclose(embedding(frames), embedding(swapped))


def _work_embedding(action_dim: int = 2) -> ConservedEmbedding:
    torch.manual_seed(3)
    embedding = ConservedEmbedding(
        EmbeddingConfig(input="frames", dim=4, width=4, action_work=True), channels=1,
        image_size=8, action_dim=action_dim,
    )
    torch.nn.init.normal_(embedding.work.weight)
    return embedding


def test_a_fresh_action_work_embedding_is_the_action_blind_one() -> None:
    torch.manual_seed(3)
    blind = ConservedEmbedding(EmbeddingConfig(input="frames", dim=4, width=4), channels=1,
                               image_size=8)
    torch.manual_seed(3)
    aware = ConservedEmbedding(EmbeddingConfig(input="frames", dim=4, width=4, action_work=True),
                               channels=1, image_size=8, action_dim=2)
    frames = torch.rand(2, 5, 1, 8, 8)
    torch.testing.assert_close(aware(frames, torch.randn(2, 4, 2)), blind(frames))


def test_action_work_subtracts_the_work_of_each_action_over_its_own_pair() -> None:
    embedding = _work_embedding()
    frames, actions = torch.rand(2, 5, 1, 8, 8), torch.randn(2, 4, 2)
    balance = embedding(frames, actions)
    pairs = torch.cat([frames[:, :-1], frames[:, 1:]], dim=2).flatten(0, 1)
    values = embedding.net(pairs).unflatten(0, (2, 4))
    rates = embedding.work(values).unflatten(-1, (4, 2))
    # c_t − c_{t−1} = q_t − q_{t−1} − a_t · U(q_t), q_t the value of (x_t, x_{t+1}); the first
    # pair is q itself.
    work = (rates * actions[:, :, None, :]).sum(-1)
    torch.testing.assert_close(balance[:, 0], values[:, 0])
    torch.testing.assert_close(balance.diff(dim=1), values.diff(dim=1) - work[:, 1:])
    # Without torque the pair value is what is conserved.
    torch.testing.assert_close(embedding(frames, torch.zeros(2, 4, 2)), values)
    # Action 0 drives the first pair, against which everything is measured: it does not count.
    changed = actions.clone()
    changed[:, 0] += 1.0
    torch.testing.assert_close(embedding(frames, changed), balance)


def test_action_work_needs_the_actions_in_their_layout() -> None:
    embedding = _work_embedding()
    frames = torch.rand(2, 5, 1, 8, 8)
    with pytest.raises(ValueError, match="expected the actions"):
        embedding(frames)
    with pytest.raises(ValueError, match=r"expected actions \(B=2, >= 4, A=2\), got \(2, 3, 2\)"):
        embedding(frames, torch.zeros(2, 3, 2))
    with pytest.raises(ValueError, match=r"A=2\), got \(2, 4, 1\)"):
        embedding(frames, torch.zeros(2, 4, 1))
    with pytest.raises(ValueError, match="action_work: expected input=frames"):
        EmbeddingConfig(input="hidden", action_work=True).validate()


@pytest.mark.parametrize("include_context", [True, False])
def test_conservation_reads_the_actions_aligned_with_the_embedded_frames(
    include_context: bool,
) -> None:
    model = tiny_model()
    noether = noether_for(model, embedding="frames", action_work=True,
                          include_context=include_context)
    frames, actions = window()
    context = frames[:, :N_PAST]
    with torch.no_grad():
        rollout = noether.rollout(model, noether.initial_params(model, 3, context), context,
                                  actions, HORIZON)
        embedded = rollout.frames
        first = N_PAST
        if include_context:
            embedded, first = torch.cat([context, rollout.frames], 1), 0
        expected = conservation_loss(noether.embedding(embedded, actions[:, first:]))
        torch.testing.assert_close(noether.conservation(rollout, context, actions), expected)
        with pytest.raises(ValueError, match="expected the actions"):
            noether.conservation(rollout, context)


def test_embedding_rejects_wrong_shapes_and_configs() -> None:
    embedding = ConservedEmbedding(EmbeddingConfig(input="hidden"), hidden_size=8)
    with pytest.raises(ValueError, match=r"expected \(B, T, 8\)"):
        embedding(torch.zeros(2, 3, 7))
    with pytest.raises(TypeError, match="expected a tensor"):
        embedding([1.0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expected one of"):
        EmbeddingConfig(input="pixels").validate()
    with pytest.raises(ValueError, match="state_head"):
        ConservedEmbedding(EmbeddingConfig(input="state"), state_dim=0)


def test_noether_config_validation() -> None:
    model = tiny_model()
    with pytest.raises(ValueError, match=r"noether\.tailored"):
        NoetherModule(NoetherConfig(tailored="decoder"), model.config)
    with pytest.raises(ValueError, match="include_context"):
        NoetherModule(NoetherConfig(include_context=True), model.config)
    with pytest.raises(ValueError, match="state_head"):
        NoetherModule(NoetherConfig(embedding=EmbeddingConfig(input="state")), model.config)
    with pytest.raises(ValueError, match=r"noether\.loss"):
        NoetherModule(NoetherConfig(loss="sum"), model.config)


# ---------------------------------------------------------------------------- tailoring
@pytest.mark.parametrize(
    ("embedding", "tailored", "optimizer", "lr", "changes"),
    [("hidden", "lstm", "adam", 0.02, {}), ("hidden", "lstm", "sgd", 1e3, {"loss": "both"}),
     ("frames", "norm", "adam", 0.02, {"include_context": True, "loss": "first"}),
     ("hidden", "all", "adam", 1e-3, {}),
     ("hidden", "lstm", "sgd", 0.5, {"scale_free": True}),
     ("frames", "lstm", "adam", 0.02, {"include_context": True, "action_work": True})],
)
def test_inner_loop_lowers_the_conservation_loss(
    embedding: str, tailored: str, optimizer: str, lr: float, changes: dict[str, object]
) -> None:
    model = tiny_model()
    noether = noether_for(model, embedding=embedding, tailored=tailored, lr=lr,
                          optimizer=optimizer, **changes)
    frames, actions = window()
    with torch.no_grad():
        out = noether.predict(model, frames[:, :N_PAST], actions, HORIZON, steps=5)
    assert out.frames.shape == (3, HORIZON, 1, 32, 32)
    assert torch.all(out.after < out.before), (out.before, out.after)
    # The module's weights were not touched by tailoring.
    assert torch.equal(tiny_model().encoder.head.out.weight, model.encoder.head.out.weight)


def test_zero_steps_reproduce_the_baseline_exactly() -> None:
    model = tiny_model()
    noether = noether_for(model)
    frames, actions = window()
    with torch.no_grad():
        baseline = model.predict(frames[:, :N_PAST], actions, HORIZON)
        tailored = noether.predict(model, frames[:, :N_PAST], actions, HORIZON, steps=0)
    assert torch.equal(tailored.frames, baseline)
    torch.testing.assert_close(tailored.before, tailored.after)
    # The training unroll with K = 0 is the plain training unroll.
    zero = noether_for(model, steps=0)
    out, _ = zero.train_forward(model, frames, actions, N_PAST)
    assert torch.equal(out.frames, model(frames, actions, N_PAST).frames)


def test_one_example_tailoring_does_not_change_another() -> None:
    # float64: in float32 the convolutions round differently with the batch size (a rollout's
    # frames are decoded in one batch), which would blur the 1e-6 comparisons below.
    model = tiny_model(torch.float64)
    noether = noether_for(model, torch.float64, steps=3, lr=0.05, optimizer="adam")
    frames, actions = window(dtype=torch.float64)
    other_frames, other_actions = frames.clone(), actions.clone()
    other_frames[1] = torch.rand_like(other_frames[1])
    other_actions[1] = -other_actions[1]
    with torch.no_grad():
        a = noether.predict(model, frames[:, :N_PAST], actions, HORIZON)
        b = noether.predict(model, other_frames[:, :N_PAST], other_actions, HORIZON)
    for kept in (0, 2):
        torch.testing.assert_close(a.frames[kept], b.frames[kept], rtol=0, atol=1e-6)
        torch.testing.assert_close(a.params["lstm.beta"][kept], b.params["lstm.beta"][kept],
                                   rtol=0, atol=1e-7)
    assert not torch.allclose(a.frames[1], b.frames[1])
    # Example 0 alone gets the same tailored prediction as inside the batch.
    with torch.no_grad():
        alone = noether.predict(model, frames[:1, :N_PAST], actions[:1], HORIZON)
    torch.testing.assert_close(alone.frames[0], a.frames[0], rtol=0, atol=1e-6)


def test_tailoring_changes_the_prediction() -> None:
    model = tiny_model()
    noether = noether_for(model, steps=2, lr=0.05, optimizer="adam")
    frames, actions = window()
    with torch.no_grad():
        plain = model.predict(frames[:, :N_PAST], actions, HORIZON)
        tailored = noether.predict(model, frames[:, :N_PAST], actions, HORIZON).frames
    assert (tailored - plain).abs().max() > 1e-5


def _scaled_copy(noether: NoetherModule, scale: float) -> NoetherModule:
    scaled = copy.deepcopy(noether)
    with torch.no_grad():
        last = scaled.embedding.net[-1]
        last.weight.mul_(scale)
        last.bias.mul_(scale)
    return scaled


def test_scale_free_loss_and_inner_step_ignore_the_scale_of_g() -> None:
    model = tiny_model(torch.float64)
    frames, actions = window(dtype=torch.float64)
    context = frames[:, :N_PAST]
    for scale_free, power in ((True, 0), (False, 2)):
        noether = noether_for(model, torch.float64, scale_free=scale_free)
        scaled = _scaled_copy(noether, 10.0)
        rollout = noether.rollout(model, noether.initial_params(model, 3, context), context,
                                  actions, HORIZON)
        torch.testing.assert_close(scaled.conservation(rollout, context),
                                   noether.conservation(rollout, context) * 10.0 ** power,
                                   rtol=1e-5, atol=0)
    # The tailored parameters, and so the prediction, do not depend on g's scale either.
    noether = noether_for(model, torch.float64, scale_free=True, lr=0.05)
    tailored = noether.tailor(model, context, actions, HORIZON)
    rescaled = _scaled_copy(noether, 10.0).tailor(model, context, actions, HORIZON)
    for name, value in tailored.items():  # up to the variance floor, 1e-6 of g's variance here
        torch.testing.assert_close(rescaled[name], value, rtol=1e-5, atol=1e-9)
    assert (tailored["lstm.beta"] - noether.initial_params(model, 3, context)["lstm.beta"]
            ).abs().max() > 1e-6


def test_meta_step_metrics_measure_g_scale_and_the_inner_step() -> None:
    model = tiny_model(torch.float64)
    frames, actions = window(dtype=torch.float64)
    noether = noether_for(model, torch.float64, lr=0.05)
    _, metrics = noether.train_forward(model, frames, actions, N_PAST)
    context = frames[:, :N_PAST]
    initial = noether.initial_params(model, 3, context)
    tailored = noether.tailor(model, context, actions, HORIZON)
    by_hand = torch.stack([
        (tailored[name] - value).flatten(1).square().sum(1) for name, value in initial.items()
    ]).sum(0).sqrt().mean()
    torch.testing.assert_close(metrics["train/inner_step"], by_hand.float())
    assert metrics["train/inner_lr"].item() == pytest.approx(0.05)
    rollout = noether.rollout(model, initial, context, actions, HORIZON)
    embeddings = noether.embed(rollout, context)
    torch.testing.assert_close(metrics["train/embedding_variance"],
                               embeddings.flatten(0, 1).var(0, correction=0).sum())
    # g ten times larger: variance ×100, and one plain SGD step ×100 as long (the loss is
    # quadratic in g), which is why an unbounded g destabilises the meta step.
    _, scaled = _scaled_copy(noether, 10.0).train_forward(model, frames, actions, N_PAST)
    for name in ("train/embedding_variance", "train/inner_step"):
        assert scaled[name].item() == pytest.approx(100.0 * metrics[name].item(), rel=1e-4)


def test_scale_free_test_time_loss_uses_the_running_variance_per_example() -> None:
    model = tiny_model(torch.float64)
    noether = noether_for(model, torch.float64, scale_free=True)
    frames, actions = window(dtype=torch.float64)
    context = frames[:, :N_PAST]
    rollout = noether.rollout(model, noether.initial_params(model, 3, context), context,
                              actions, HORIZON)
    embeddings = noether.embed(rollout, context).detach()
    batch_variance = embeddings.flatten(0, 1).var(0, correction=0).sum()
    for _ in range(2):  # meta-training: the batch's variance, folded into the running average
        noether.conservation(rollout, context)
    torch.testing.assert_close(noether.variance(embeddings).detach(), batch_variance + 1e-12)
    assert int(noether.variance_updates) == 3
    noether.eval()
    plain = conservation_loss(embeddings, "consecutive")
    torch.testing.assert_close(noether.conservation(rollout, context).detach(),
                               plain / (batch_variance + 1e-12))
    # At test time an example's loss does not depend on the others in its batch.
    single = noether.rollout(model, noether.initial_params(model, 1, context), context[:1],
                             actions[:1], HORIZON)
    torch.testing.assert_close(noether.conservation(single, context[:1]).detach(),
                               noether.conservation(rollout, context).detach()[:1])
    # The running variance travels with the checkpoint.
    loaded = load_noether({"extra": {"noether": noether.checkpoint_state()}}, model)
    assert loaded is not None
    torch.testing.assert_close(loaded.embedding_variance.double(), noether.embedding_variance)
    assert int(loaded.variance_updates) == 3


# ---------------------------------------------------------------------------- meta-gradient
def _outer_loss(model: SVGWorldModel, noether: NoetherModule, frames: Tensor,
                actions: Tensor) -> Tensor:
    out, _ = noether.train_forward(model, frames, actions, N_PAST)
    return ((out.frames - frames[:, 1:]) ** 2).mean()


@pytest.mark.parametrize("tailored", ["lstm", "norm"])
def test_second_order_meta_gradient_matches_finite_differences(tailored: str) -> None:
    dtype = torch.float64
    # With skips the decoder's norms see the context frame's features too, which makes the
    # second-order term (what the first-order approximation drops) large enough to tell apart.
    model = tiny_model(dtype, skips=True)
    noether = noether_for(model, dtype, tailored=tailored, steps=2, lr=100.0, learnable_lr=True)
    frames, actions = window(2, dtype)
    parameters = list(model.parameters()) + list(noether.parameters())
    loss = _outer_loss(model, noether, frames, actions)
    grads = torch.autograd.grad(loss, parameters, allow_unused=True)
    generator = torch.Generator().manual_seed(3)
    directions = [torch.randn(p.shape, generator=generator, dtype=dtype) for p in parameters]
    analytic = sum(float((g * d).sum()) for g, d in zip(grads, directions, strict=True)
                   if g is not None)
    # The small conv net with group norms is sharply curved: a larger step's truncation error
    # exceeds the tolerance even without tailoring.
    eps = 1e-8

    def shifted(sign: float) -> float:
        with torch.no_grad():
            for p, d in zip(parameters, directions, strict=True):
                p.add_(sign * eps * d)
        value = float(_outer_loss(model, noether, frames, actions).detach())
        with torch.no_grad():
            for p, d in zip(parameters, directions, strict=True):
                p.sub_(sign * eps * d)
        return value

    numeric = (shifted(1.0) - shifted(-1.0)) / (2 * eps)
    assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-10)
    # g_φ and the learned inner lr get a meta-gradient only through the inner step.
    meta_grads = grads[len(list(model.parameters())):]
    assert any(g is not None and g.abs().sum() > 0 for g in meta_grads)

    # The first-order approximation drops the inner gradient's dependence on the weights.
    first_order = noether_for(model, dtype, tailored=tailored, steps=2, lr=100.0,
                              learnable_lr=True)
    first_order.load_state_dict(noether.state_dict())
    first_order.config.inner.second_order = False
    approx = torch.autograd.grad(_outer_loss(model, first_order, frames, actions),
                                 list(model.parameters()), allow_unused=True)
    approx_dir = sum(float((g * d).sum()) for g, d in zip(approx, directions, strict=False)
                     if g is not None)
    assert approx_dir != pytest.approx(numeric, rel=1e-5)


@pytest.mark.parametrize("tailored", ["lstm", "norm"])
def test_model_second_order_off_keeps_g_second_order_and_the_model_first_order(
        tailored: str) -> None:
    dtype = torch.float64
    model = tiny_model(dtype, skips=True)
    frames, actions = window(2, dtype)
    weights = list(model.parameters())

    def gradients(first_order: bool = False, **changes: object
                  ) -> tuple[list[Tensor], list[Tensor]]:
        noether = noether_for(model, dtype, tailored=tailored, steps=2, lr=100.0,
                              learnable_lr=True, **changes)
        noether.config.inner.second_order = not first_order
        grads = torch.autograd.grad(_outer_loss(model, noether, frames, actions),
                                    weights + list(noether.parameters()), allow_unused=True)
        as_tensors = [torch.zeros_like(p) if g is None else g for g, p in
                      zip(grads, weights + list(noether.parameters()), strict=True)]
        return as_tensors[:len(weights)], as_tensors[len(weights):]

    full_model, full_g = gradients()
    split_model, split_g = gradients(model_second_order=False)
    first_model, _ = gradients(first_order=True)
    # The model's weights get the first-order gradient...
    for split, first in zip(split_model, first_model, strict=True):
        torch.testing.assert_close(split, first, rtol=1e-10, atol=1e-14)
    assert any(not torch.allclose(s, f) for s, f in zip(split_model, full_model, strict=True))
    # ...while g_φ and the inner lr keep their full second-order meta-gradient.
    assert any(g.abs().sum() > 0 for g in split_g)
    for split, full in zip(split_g, full_g, strict=True):
        torch.testing.assert_close(split, full, rtol=1e-8, atol=1e-14)


def test_model_second_order_off_refuses_all_weights_tailoring() -> None:
    model = tiny_model()
    with pytest.raises(ValueError, match="model_second_order=false: expected tailored=lstm"):
        noether_for(model, tailored="all", model_second_order=False)


# ---------------------------------------------------------------------------- checkpoints
def test_checkpoint_state_round_trip() -> None:
    model = tiny_model()
    noether = noether_for(model, learnable_lr=True, test_inner_steps=7)
    payload = {"extra": {"noether": noether.checkpoint_state()}}
    loaded = load_noether(payload, model)
    assert loaded is not None and loaded.config == noether.config
    for name, value in noether.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value)
    assert load_noether({"extra": {}}, model) is None


def test_extend_optimizer_state_keeps_the_baseline_moments() -> None:
    model = tiny_model()
    baseline = torch.optim.Adam(model.parameters(), lr=1e-3)
    frames, actions = window()
    model(frames, actions, N_PAST).frames.mean().backward()
    baseline.step()
    noether = noether_for(model)
    optimizer = torch.optim.Adam([{"params": list(model.parameters())},
                                  {"params": list(noether.parameters())}], lr=1e-3)
    optimizer.load_state_dict(extend_optimizer_state(baseline.state_dict(), optimizer))
    first = next(model.parameters())
    assert torch.equal(optimizer.state[first]["exp_avg"], baseline.state[first]["exp_avg"])
    with pytest.raises(ValueError, match="one group"):
        extend_optimizer_state({"param_groups": [], "state": {}}, optimizer)


def test_inner_step_sweep_matches_separate_tailored_predictions() -> None:
    from noether_control.evaluation.metrics import motion
    from noether_control.experiments.compare import inner_step_sweep

    model = tiny_model()
    noether = noether_for(model, lr=0.02, optimizer="adam")
    frames, actions = window(4)
    batches = [{"frames": frames[:2], "actions": actions[:2]},
               {"frames": frames[2:], "actions": actions[2:]}]
    sweep = inner_step_sweep(model, noether, batches, n_past=N_PAST, horizon=HORIZON,
                             steps=[3, 0, 2])
    assert sweep["steps"] == [0, 2, 3]
    truth = frames[:, N_PAST:]
    with torch.no_grad():
        for k, mse, conservation in zip(sweep["steps"], sweep["mse"], sweep["conservation"],
                                        strict=True):
            out = noether.predict(model, frames[:, :N_PAST], actions, HORIZON, steps=k)
            assert mse == pytest.approx(float(((out.frames - truth) ** 2).mean()), rel=1e-5)
            assert conservation == pytest.approx(float(out.after.mean()), rel=1e-4)
            moved = float(motion(out.frames, frames[:, N_PAST - 1]).mean())
            assert sweep["motion"][sweep["steps"].index(k)] == pytest.approx(moved, rel=1e-4)
            # the prediction before the first inner step is the K = 0 one, whatever K
            untailored = noether.predict(model, frames[:, :N_PAST], actions, HORIZON, steps=0)
            torch.testing.assert_close(out.untailored_frames, untailored.frames)
    assert sweep["conservation"][2] < sweep["conservation"][0]
    assert sweep["true_motion"] == pytest.approx(
        float(motion(truth, frames[:, N_PAST - 1]).mean()), rel=1e-5)


def test_tailoring_refuses_a_rollout_too_short_for_the_loss() -> None:
    model = tiny_model()
    frames, actions = window()
    with pytest.raises(ValueError, match=r"horizon: .* expected >= 3 predicted frames .* got 2"):
        noether_for(model).predict(model, frames[:, :N_PAST], actions, 2)
    with_context = noether_for(model, embedding="frames", include_context=True)
    out = with_context.predict(model, frames[:, :N_PAST], actions, 1)
    assert out.frames.shape[1] == 1


def test_all_weights_meta_unroll_keeps_codes_and_reconstructions() -> None:
    model = tiny_model()
    noether = noether_for(model, tailored="all", lr=1e-3)
    frames, actions = window()
    out, _ = noether.train_forward(model, frames, actions, N_PAST, reconstruct=True)
    plain = model(frames, actions, N_PAST, reconstruct=True)
    for name in ("reconstructions", "codes", "predicted_codes"):
        value = getattr(out, name)
        assert value is not None and value.shape == getattr(plain, name).shape, name


def test_meta_training_unroll_can_reconstruct_with_the_tailored_norms() -> None:
    model = tiny_model()
    noether = noether_for(model, tailored="norm", steps=2, lr=0.05, optimizer="adam")
    frames, actions = window()
    out, _ = noether.train_forward(model, frames, actions, N_PAST, reconstruct=True)
    assert out.reconstructions is not None and out.reconstructions.shape == frames.shape
    plain, _ = noether.train_forward(model, frames, actions, N_PAST)
    assert plain.reconstructions is None
    # The reconstructions use the tailored (per-example) norms, not the plain model's.
    untailored = model(frames, actions, N_PAST, reconstruct=True).reconstructions
    assert not torch.allclose(out.reconstructions, untailored)


# ---------------------------------------------------------------------------- diagnostics
def test_carry_detached_changes_no_value_and_is_restored() -> None:
    model = tiny_model()
    frames, actions = window()
    with torch.no_grad():
        plain = model.predict(frames[:, :N_PAST], actions, HORIZON)
        with model.carry_detached():
            assert model.detach_carry
            cut = model.predict(frames[:, :N_PAST], actions, HORIZON)
    torch.testing.assert_close(cut, plain, rtol=0, atol=0)
    with pytest.raises(RuntimeError), model.carry_detached():
        raise RuntimeError("inside")
    assert not model.detach_carry


def test_inner_gradient_split_matches_the_inner_step_and_the_direct_path() -> None:
    from noether_control.noether.diagnostics import inner_gradient_split

    model = tiny_model(torch.float64)  # float64: the SGD step below is a small difference
    noether = noether_for(model, torch.float64, lr=0.5, optimizer="sgd")
    frames, actions = window(dtype=torch.float64)
    context = frames[:, :N_PAST]
    split = inner_gradient_split(noether, model, context, actions, HORIZON)
    # total: the step one plain SGD inner step takes, divided by the inner lr
    initial = noether.initial_params(model, 3, context)
    stepped = noether.tailor(model, context, actions, HORIZON, steps=1, second_order=False)
    moved = torch.cat([(stepped[k] - initial[k]).detach().flatten(1) for k in initial], 1)
    torch.testing.assert_close(split["total"], moved.norm(dim=1) / 0.5, rtol=1e-7, atol=0)
    # direct path, by hand: h = γ·raw + β is read by g_φ at every predicted step, so at the
    # identity (γ, β) = (1, 0) its gradient is Σ_t ∂L/∂h_t · h_t for γ and Σ_t ∂L/∂h_t for β
    params = {k: v.clone().requires_grad_(True) for k, v in initial.items()}
    rollout = noether.rollout(model, params, context, actions, HORIZON)
    loss = noether.conservation(rollout, context).sum()
    (read,) = torch.autograd.grad(loss, rollout.hidden)
    by_hand = torch.cat([(read * rollout.hidden).sum(1), read.sum(1)], 1).detach()
    assert set(initial) == {"lstm.gamma", "lstm.beta"}
    torch.testing.assert_close(split["through_input"], by_hand.norm(dim=1), rtol=1e-7, atol=0)
    assert bool((split["through_dynamics"] > 0).all())
    assert bool((split["total"] <= split["through_input"] + split["through_dynamics"] + 1e-9).all())


def test_test_time_steps_take_the_override_then_the_test_setting_then_the_training_k() -> None:
    config = NoetherConfig(inner=TailoringConfig(steps=3))
    assert config.test_steps() == 3
    assert replace(config, test_inner_steps=7).test_steps() == 7
    assert replace(config, test_inner_steps=7).test_steps(0) == 0


def test_a_bundle_is_read_once_and_holds_the_model_g_and_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tiny_model()
    noether = noether_for(model, learnable_lr=True)
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, model=model, optimizer=None, step=5,
                    config={"data": {"path": "somewhere"}}, rng={},
                    extra={"noether": noether.checkpoint_state()})
    reads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: reads.append(a) or real_load(*a, **k))
    bundle = load_bundle(path)
    assert len(reads) == 1
    assert bundle.step == 5 and bundle.config["data"]["path"] == "somewhere"
    assert bundle.noether is not None and bundle.noether.config == noether.config
    for name, value in model.state_dict().items():
        assert torch.equal(bundle.model.state_dict()[name], value)
    assert not bundle.model.training and not bundle.noether.training
    save_checkpoint(path, model=model, optimizer=None, step=5, config={}, rng={})
    assert load_bundle(path).noether is None  # a baseline
