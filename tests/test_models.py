"""The SVG world model: shapes, closed-loop consistency, per-example adaptation, checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.func import grad, vmap

from noether_control.models import SVGConfig, SVGWorldModel
from noether_control.models.checkpoint import load_world_model, save_checkpoint
from noether_control.models.svg import functional_verb, reward_loss
from noether_control.training.warm_start import init_from_baseline


def tiny_config(**overrides: object) -> SVGConfig:
    base = dict(
        image_size=32, channels=3, action_dim=2, width=8, g_dim=16, rnn_size=32, rnn_layers=2,
        action_embed_dim=4, z_dim=4, posterior_rnn_size=16,
    )
    base.update(overrides)
    return SVGConfig(**base)  # type: ignore[arg-type]


def tiny_model(seed: int = 0, **overrides: object) -> SVGWorldModel:
    torch.manual_seed(seed)
    model = SVGWorldModel(tiny_config(**overrides))
    # As after training: the change head starts at zero ("no motion"), which would hide any
    # dependence of the prediction on the LSTM.
    torch.nn.init.normal_(model.predictor_out.weight, std=0.1)
    return model


def batch(
    b: int = 3, t: int = 6, size: int = 32, seed: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    frames = torch.rand(b, t, 3, size, size, generator=generator)
    actions = torch.randn(b, t, 2, generator=generator)
    return frames, actions


@pytest.mark.parametrize(("encoder", "size"), [("dcgan", 32), ("dcgan", 64), ("vgg", 64),
                                               ("vgg", 128)])
def test_verbs_have_documented_shapes(encoder: str, size: int) -> None:
    model = tiny_model(encoder=encoder, image_size=size, reward_head=True, state_head=True,
                       state_dim=3)
    frames, actions = batch(2, 5, size)
    state = model.observe(frames[:, :2], actions[:, :2])
    assert state.code.shape == (2, 16)
    rollout = model.imagine(state, actions[:, 2:])
    assert rollout.frames.shape == (2, 3, 3, size, size)
    assert rollout.rewards.shape == (2, 3)
    assert rollout.hidden.shape == (2, 3, 32)
    assert rollout.states is not None and rollout.states.shape == (2, 3, 3)
    predicted = model.predict(frames[:, :2], actions[:, :4], n_future=3)
    assert predicted.shape == (2, 3, 3, size, size)
    assert predicted.min() >= 0.0 and predicted.max() <= 1.0
    # predict is the first frames of the imagined rollout of the same actions
    torch.testing.assert_close(predicted, rollout.frames)


@pytest.mark.parametrize("feedback", ["latent", "pixels"])
def test_training_unroll_closed_loop_matches_predict(feedback: str) -> None:
    model = tiny_model(feedback=feedback)
    frames, actions = batch(3, 6)
    n_past = 2
    closed = model(frames, actions, n_past, teacher=torch.zeros(3, 6, dtype=torch.bool))
    predicted = model.predict(frames[:, :n_past], actions, n_future=4)
    torch.testing.assert_close(closed.frames[:, n_past - 1 :], predicted, rtol=1e-5, atol=1e-6)
    teacher = model(frames, actions, n_past)
    # up to the first predicted frame the inputs are the same; after it, teacher forcing sees
    # the true frames and must differ
    torch.testing.assert_close(teacher.frames[:, :n_past], closed.frames[:, :n_past])
    assert not torch.allclose(teacher.frames[:, n_past + 1 :], closed.frames[:, n_past + 1 :])


def test_prediction_ignores_ground_truth_after_context() -> None:
    model = tiny_model()
    frames, actions = batch(2, 6)
    base = model.predict(frames[:, :2], actions, n_future=4)
    # actions after the ones used (index ≥ n_past + n_future - 1) do not matter
    altered = actions.clone()
    altered[:, 5:] += 5.0
    torch.testing.assert_close(model.predict(frames[:, :2], altered, n_future=4), base)
    # but an action inside the horizon does
    altered[:, 3] += 5.0
    assert not torch.allclose(model.predict(frames[:, :2], altered, n_future=4), base)


def test_bad_inputs_raise_value_errors_naming_the_mismatch() -> None:
    model = tiny_model()
    frames, actions = batch(2, 4)
    with pytest.raises(ValueError, match="32px"):
        model.predict(torch.rand(2, 2, 3, 64, 64), actions, 2)
    with pytest.raises(ValueError, match="action_dim 2"):
        model.predict(frames[:, :2], torch.randn(2, 4, 1), 2)
    with pytest.raises(ValueError, match="at least 5 steps"):
        model.predict(frames[:, :2], actions, 4)
    with pytest.raises(ValueError, match="n_future"):
        model.predict(frames[:, :2], actions, 0)
    # per-example adaptation of another batch (even one that divides B x steps) is refused
    for wrong in (4, 1):
        with pytest.raises(ValueError, match=r"adapt\['[\w.]+'\]: expected shape \(2, "):
            model.predict(frames[:, :2], actions, 2, adapt=model.adapt_init(wrong))
    with pytest.raises(ValueError, match=r"unknown entry 'lstm\.scale'"):
        model.predict(frames[:, :2], actions, 2, adapt={"lstm.scale": torch.ones(2, 8)})
    state = model.observe(frames[:, :2], actions[:, :2])
    for bad in (actions[:, :0], actions[:1]):
        with pytest.raises(ValueError, match=r"actions: expected shape \(2, H ≥ 1, 2\)"):
            model.imagine(state, bad)
    with pytest.raises(ValueError, match="power of two"):
        SVGWorldModel(tiny_config(image_size=48))
    with pytest.raises(ValueError, match="encoder"):
        SVGWorldModel(tiny_config(encoder="resnet"))


def test_per_example_gamma_changes_only_that_example() -> None:
    model = tiny_model()
    frames, actions = batch(3, 5)
    params = dict(model.named_parameters())
    adapt = model.adapt_init(3)
    identity = functional_verb(model, params, "predict", frames[:, :2], actions, 3, adapt)
    torch.testing.assert_close(identity, model.predict(frames[:, :2], actions, 3))
    for key in ("encoder.0.0.gamma", "decoder.1.0.beta", "decoder.0.0.gamma", "lstm.gamma"):
        changed = {k: v.clone() for k, v in adapt.items()}
        changed[key][0] += 0.5
        out = functional_verb(model, params, "predict", frames[:, :2], actions, 3, changed)
        assert not torch.allclose(out[0], identity[0]), key
        torch.testing.assert_close(out[1:], identity[1:])


def test_vmap_per_example_gradients_match_batched_gradients() -> None:
    model = tiny_model()
    frames, actions = batch(3, 5)
    params = {k: v.detach() for k, v in model.named_parameters()}
    adapt = model.adapt_init(3)

    def loss(a: dict[str, torch.Tensor], f: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        # one example: add the batch dimension the model expects
        single = {k: v[None] for k, v in a.items()}
        pred = functional_verb(model, params, "predict", f[None, :2], act[None], 3, single)
        return ((pred - f[None, 2:]) ** 2).mean()

    per_example = vmap(grad(loss))({k: v for k, v in adapt.items()}, frames, actions)

    def batched(a: dict[str, torch.Tensor]) -> torch.Tensor:
        pred = functional_verb(model, params, "predict", frames[:, :2], actions, 3, a)
        return ((pred - frames[:, 2:]) ** 2).mean(dim=(1, 2, 3, 4)).sum()

    reference = grad(batched)(adapt)
    for key in ("encoder.0.0.gamma", "decoder.0.0.beta", "lstm.beta"):
        assert per_example[key].shape == (3, adapt[key].shape[1])
        torch.testing.assert_close(per_example[key], reference[key], rtol=1e-4, atol=1e-7)
        assert per_example[key].abs().sum() > 0


def test_second_order_gradient_through_an_inner_step() -> None:
    model = tiny_model()
    frames, actions = batch(2, 5)
    params = dict(model.named_parameters())

    def task_loss(p: dict[str, torch.Tensor], a: dict[str, torch.Tensor]) -> torch.Tensor:
        pred = functional_verb(model, p, "predict", frames[:, :2], actions, 3, a)
        return ((pred - frames[:, 2:]) ** 2).mean()

    def meta_gradient(second_order: bool) -> torch.Tensor:
        adapt = {k: v.requires_grad_() for k, v in model.adapt_init(2).items()}
        inner = torch.autograd.grad(task_loss(params, adapt), list(adapt.values()),
                                    create_graph=second_order)
        adapted = {k: v - 10.0 * g for (k, v), g in zip(adapt.items(), inner, strict=True)}
        weight = params["predictor.cells.0.weight"]
        (outer,) = torch.autograd.grad(task_loss(params, adapted), [weight])
        return outer

    full = meta_gradient(second_order=True)
    first = meta_gradient(second_order=False)
    assert torch.isfinite(full).all()
    # the second-order term is really there: it changes the meta-gradient
    assert not torch.allclose(full, first)


def test_stochastic_svg_lp_kl_and_seeded_sampling() -> None:
    model = tiny_model(stochastic=True)
    frames, actions = batch(2, 5)
    noise = torch.randn(2, 4, 4, generator=torch.Generator().manual_seed(0))
    out = model(frames, actions, 2, noise=noise)
    assert out.kl.shape == (2,) and (out.kl >= 0).all()
    with pytest.raises(ValueError, match="noise"):
        model(frames, actions, 2)

    def sample(seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return model.predict(frames[:, :2], actions, 3, generator=generator)

    torch.testing.assert_close(sample(3), sample(3))
    assert not torch.allclose(sample(3), sample(4))


def test_checkpoint_round_trip_and_bad_files(tmp_path: Path) -> None:
    model = tiny_model(reward_head=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    frames, actions = batch(2, 5)
    config = {"data": {"path": "somewhere", "n_past": 2, "n_future": 3}}
    path = save_checkpoint(tmp_path / "ck.pt", model=model, optimizer=optimizer, step=7,
                           config=config, rng={"torch": torch.get_rng_state()})
    loaded, loaded_config = load_world_model(path)
    assert not loaded.training
    assert loaded_config == config
    assert (loaded.config.image_size, loaded.config.channels, loaded.config.action_dim) == (
        32, 3, 2)
    torch.testing.assert_close(loaded.predict(frames[:, :2], actions, 3),
                               model.eval().predict(frames[:, :2], actions, 3))

    corrupt = tmp_path / "corrupt.pt"
    # truncated; then text files that torch's legacy reader fails on with IndexError / KeyError
    for content in (path.read_bytes()[:1000], b"step,loss\n1,0.5\n", b"hello world"):
        corrupt.write_bytes(content)
        with pytest.raises(ValueError, match="corrupt or not a torch file"):
            load_world_model(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": model.state_dict()}, foreign)
    with pytest.raises(ValueError, match="expected format"):
        load_world_model(foreign)
    # weights of another architecture under this config: the error names the tensor
    payload = torch.load(path, weights_only=True)
    payload["model_config"]["g_dim"] = 24
    torch.save(payload, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"encoder\.head\.out\.weight"):
        load_world_model(tmp_path / "other.pt")
    with pytest.raises(ValueError, match="no such file"):
        load_world_model(tmp_path / "missing.pt")


def test_reconstructions_come_from_each_frame_s_own_code_only() -> None:
    model = tiny_model()
    frames, actions = batch(2, 5)
    plain = model(frames, actions, n_past=2)
    assert plain.reconstructions is None
    out = model(frames, actions, n_past=2, reconstruct=True)
    assert out.reconstructions is not None and out.reconstructions.shape == frames.shape
    torch.testing.assert_close(out.frames, plain.frames)
    expected = model.decode(*_code_without_skips(model, frames[:, 3]))
    torch.testing.assert_close(out.reconstructions[:, 3], expected)
    # No skip path: changing the context frame leaves the other frames' reconstructions alone.
    changed = frames.clone()
    changed[:, 1] = 1.0 - changed[:, 1]
    other = model(changed, actions, n_past=2, reconstruct=True).reconstructions
    assert other is not None
    torch.testing.assert_close(other[:, 2:], out.reconstructions[:, 2:])
    assert not torch.allclose(other[:, 1], out.reconstructions[:, 1])


def _code_without_skips(
    model: SVGWorldModel, frame: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    code, skips = model.encode(frame)
    return code, [torch.zeros_like(s) for s in skips]


def test_keypoint_head_finds_a_bright_spot() -> None:
    from noether_control.models.layers import KeypointHead

    head = KeypointHead(in_channels=1, keypoints=1, g_dim=4)
    with torch.no_grad():
        head.heatmaps.weight.fill_(1.0)
        head.heatmaps.bias.zero_()
        head.log_temperature.fill_(4.0)
    features = torch.zeros(2, 1, 16, 16)
    features[0, 0, 3, 12] = 5.0  # row 3 (y), column 12 (x)
    features[1, 0, 15, 0] = 5.0
    points = head.locate(features)
    grid = torch.linspace(-1.0, 1.0, 16)
    torch.testing.assert_close(points[:, 0], torch.stack([
        torch.stack([grid[12], grid[3]]), torch.stack([grid[0], grid[15]])]), atol=1e-3, rtol=0)
    assert head(features).shape == (2, 4) and head(features).abs().max() < 1


@pytest.mark.parametrize("code_head", ["keypoints", "conv"])
def test_both_code_heads_build_and_unknown_heads_are_rejected(code_head: str) -> None:
    model = tiny_model(code_head=code_head)
    frames, actions = batch(2, 4)
    assert model.predict(frames[:, :2], actions, 2).shape == (2, 2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"model\.code_head: expected one of"):
        tiny_config(code_head="pixels").validate()


def test_latent_feedback_reads_the_predicted_code_and_pixel_feedback_the_decoded_frame() -> None:
    frames, actions = batch(2, 5)
    latent = tiny_model(feedback="latent")
    pixels = tiny_model(feedback="pixels")
    pixels.load_state_dict(latent.state_dict())
    # Same weights: the first predicted frame is the same, later ones differ with the feedback.
    a = latent.predict(frames[:, :2], actions, n_future=3)
    b = pixels.predict(frames[:, :2], actions, n_future=3)
    torch.testing.assert_close(a[:, 0], b[:, 0])
    assert not torch.allclose(a[:, 1:], b[:, 1:])
    # Latent feedback never encodes a predicted frame: the encoder sees the context only.
    calls = []
    latent.encoder.register_forward_hook(lambda module, args, out: calls.append(args[0].shape))
    latent.predict(frames[:, :2], actions, n_future=3)
    assert calls == [(4, 3, 32, 32)]
    with pytest.raises(ValueError, match=r"model\.feedback: expected one of"):
        tiny_config(feedback="frames").validate()


def test_without_skips_a_prediction_is_the_decoding_of_its_code_alone() -> None:
    model = tiny_model(skips=False)
    frames, actions = batch(2, 4)
    state = model.observe(frames[:, :2], actions[:, :2])
    assert state.skips == []  # nothing downstream carries skip features
    with_skips = tiny_model(skips=True)
    context = with_skips.observe(frames[:, :2], actions[:, :2])
    other = with_skips.observe(frames[:, 2:], actions[:, :2])
    # The skip-free decoder ignores any skip features it is handed: only the code matters.
    torch.testing.assert_close(model.decode(state.code, context.skips),
                               model.decode(state.code, []))
    assert not torch.allclose(with_skips.decode(context.code, context.skips),
                              with_skips.decode(context.code, other.skips))



def test_an_untrained_change_predictor_predicts_no_motion() -> None:
    torch.manual_seed(0)
    model = SVGWorldModel(tiny_config())
    frames, actions = batch(2, 4)
    state = model.observe(frames[:, :2], actions[:, :2])
    last_code, _ = model.encode(frames[:, 1])
    torch.testing.assert_close(state.code, last_code)
    rollout = model.imagine(state, actions[:, 2:])
    torch.testing.assert_close(rollout.frames[:, 1], rollout.frames[:, 0])


def test_code_unroll_closed_loop_equals_an_all_false_teacher_mask() -> None:
    torch.manual_seed(0)
    model = SVGWorldModel(SVGConfig(image_size=32, width=4, g_dim=8, keypoints=4, rnn_size=16,
                                    rnn_layers=1))
    codes, actions = torch.randn(3, 7, 8), torch.randn(3, 7, 1)
    masked = model.unroll_codes(codes, actions, 2, teacher=torch.zeros(3, 7, dtype=torch.bool))
    fed_back = model.unroll_codes(codes, actions, 2, closed_loop=True)
    torch.testing.assert_close(fed_back.codes, masked.codes, rtol=0, atol=0)
    torch.testing.assert_close(fed_back.rewards, masked.rewards, rtol=0, atol=0)
    # and it is closed loop: a code after the context does not change the prediction
    changed = codes.clone()
    changed[:, 4] += 1.0
    moved = model.unroll_codes(changed, actions, 2, closed_loop=True)
    torch.testing.assert_close(moved.codes, fed_back.codes, rtol=0, atol=0)
    with pytest.raises(ValueError, match="closed_loop=True feeds every prediction back"):
        model.unroll_codes(codes, actions, 2, teacher=torch.zeros(3, 7, dtype=torch.bool),
                           closed_loop=True)


def test_the_hidden_code_reward_head_reads_the_frames_code_and_action() -> None:
    model = tiny_model(reward_input="hidden_code")
    config = model.config
    assert model.reward_net[0].in_features == config.rnn_size + config.g_dim + config.action_dim
    frames, actions = batch(2, 4)
    state = model.encode_context(frames[:, :2], actions[:, :1])
    out, _ = model.step(state.code, actions[:, 1], state.lstm)
    expected = model.reward_net(torch.cat([out.hidden, state.code, actions[:, 1]], -1))
    torch.testing.assert_close(out.reward, expected.squeeze(-1))
    # the code's own path reaches the reward: gradients flow to the head's code columns
    out.reward.sum().backward()
    code_columns = model.reward_net[0].weight.grad[:, config.rnn_size:]
    assert code_columns.abs().sum() > 0
    with pytest.raises(ValueError, match=r"model\.reward_input: expected one of"):
        tiny_config(reward_input="pixels").validate()


def test_the_motion_reward_head_also_reads_the_predicted_change_of_the_code() -> None:
    model = tiny_model(reward_input="hidden_code_motion")
    config = model.config
    assert model.reward_net[0].in_features == (config.rnn_size + 2 * config.g_dim
                                               + config.action_dim)
    frames, actions = batch(2, 4)
    state = model.encode_context(frames[:, :2], actions[:, :1])
    out, _ = model.step(state.code, actions[:, 1], state.lstm)
    motion = out.code - state.code
    assert motion.abs().max() > 0
    expected = model.reward_net(torch.cat([out.hidden, state.code, actions[:, 1], motion], -1))
    torch.testing.assert_close(out.reward, expected.squeeze(-1))


def test_the_code_motion_reward_head_reads_no_recurrent_state() -> None:
    model = tiny_model(reward_input="code_motion")
    config = model.config
    assert model.reward_net[0].in_features == 2 * config.g_dim + config.action_dim
    frames, actions = batch(2, 4)
    state = model.encode_context(frames[:, :2], actions[:, :1])
    out, _ = model.step(state.code, actions[:, 1], state.lstm)
    expected = model.reward_net(torch.cat([state.code, actions[:, 1], out.code - state.code], -1))
    torch.testing.assert_close(out.reward, expected.squeeze(-1))
    # the same code, action and code change after another action history: the same reward
    other_history = model.encode_context(frames[:, :2], -actions[:, :1])
    other, _ = model.step(state.code, actions[:, 1], other_history.lstm)
    assert (other.hidden - out.hidden).abs().max() > 0
    torch.testing.assert_close(
        other.reward,
        model.reward_net(torch.cat([state.code, actions[:, 1], other.code - state.code],
                                   -1)).squeeze(-1))


def test_a_root_cost_head_reads_its_output_as_a_negated_squared_cost() -> None:
    model = tiny_model(reward_output="root_cost")
    frames, actions = batch(2, 4)
    state = model.encode_context(frames[:, :2], actions[:, :1])
    out, _ = model.step(state.code, actions[:, 1], state.lstm)
    head_output = model.reward_net(out.hidden).squeeze(-1)
    assert head_output.abs().min() > 0  # the sign of the head's output must not matter
    torch.testing.assert_close(out.reward, -head_output.pow(2))
    with pytest.raises(ValueError, match=r"model\.reward_output: expected one of"):
        tiny_config(reward_output="cost").validate()


def test_the_root_cost_loss_is_measured_between_square_roots_of_the_costs() -> None:
    target = torch.tensor([-0.01, -0.04, -4.0])
    predicted = torch.tensor([-0.04, -0.01, -4.0], requires_grad=True)
    # √cost: 0.2 vs 0.1, 0.1 vs 0.2, 2 vs 2: a hundredth near zero weighs as much as 0.1 of √cost
    loss = reward_loss(predicted, target, "root_cost")
    torch.testing.assert_close(loss, torch.tensor(2 * 0.1**2 / 3), rtol=1e-3, atol=0)
    torch.testing.assert_close(reward_loss(predicted, target, "reward"),
                               (predicted - target).pow(2).mean())
    assert reward_loss(target, target, "root_cost") < 1e-6
    # a head predicting a zero cost still gets a finite gradient
    zero = torch.zeros(3, requires_grad=True)
    reward_loss(-zero.pow(2), target, "root_cost").backward()
    assert torch.isfinite(zero.grad).all()


def test_a_checkpoint_written_before_reward_input_loads_and_continues_as_before(
        tmp_path: Path) -> None:
    model = tiny_model(reward_head=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    path = save_checkpoint(tmp_path / "ck.pt", model=model, optimizer=optimizer, step=7,
                           config={}, rng={"torch": torch.get_rng_state()})
    payload = torch.load(path, weights_only=True)
    del payload["model_config"]["reward_input"]
    del payload["model_config"]["reward_output"]
    torch.save(payload, tmp_path / "older.pt")
    loaded, _ = load_world_model(tmp_path / "older.pt")
    assert (loaded.config.reward_input, loaded.config.reward_output) == ("hidden", "reward")
    frames, actions = batch(2, 5)
    torch.testing.assert_close(loaded.predict(frames[:, :2], actions, 3),
                               model.eval().predict(frames[:, :2], actions, 3))
    continued = tiny_model(seed=3, reward_head=True)
    step = init_from_baseline(tmp_path / "older.pt", continued,
                              torch.optim.Adam(continued.parameters(), lr=1e-3),
                              "train.init_from")
    assert step == 7
    # a head may go on into one that predicts the cost's square root: the same weights
    rooted = tiny_model(seed=3, reward_head=True, reward_output="root_cost")
    assert init_from_baseline(tmp_path / "older.pt", rooted,
                              torch.optim.Adam(rooted.parameters(), lr=1e-3),
                              "train.init_from") == 7
    torch.testing.assert_close(rooted.reward_net[0].weight, model.reward_net[0].weight)
    # a continued run with the other reward head is another architecture
    other = tiny_model(reward_head=True, reward_input="hidden_code")
    with pytest.raises(ValueError, match=r"train\.init_from.*expected the architecture"):
        init_from_baseline(tmp_path / "older.pt", other,
                           torch.optim.Adam(other.parameters(), lr=1e-3), "train.init_from")
