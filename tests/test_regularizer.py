"""KurtosisDecay: exact optimizer updates against numpy, in every graph mode."""
import numpy as np
import paddle
import pytest
from graph_modes import static_mode
from kurtosis_reference import kure_term
from kurtosis_reference import kurtosis as ref_kurtosis

import paddle_kure
from paddle_kure import KurtosisDecay

LR, COEFF = 0.1, 0.05
# 1.8 (uniform, the default) and 3.0 (normal): a regularizer that ignored `target` would pass with 1.8 alone.
TARGETS = [1.8, 3.0]
TARGET = TARGETS[0]  # the tests of one target
RNG = np.random.default_rng(11)
W0 = RNG.laplace(size=(6, 4)).astype("float32")  # K well above 1.8
X = RNG.normal(size=(5, 6)).astype("float32")


def loss_grad(w):
    """Gradient of mean((X @ w)^2) with respect to w, in float64."""
    x, w = X.astype(np.float64), w.astype(np.float64)
    return 2.0 * x.T @ (x @ w) / (x.shape[0] * w.shape[1])


def expected_sgd(w, target, l2_coeff=0.0):
    return w - LR * (loss_grad(w) + kure_term(w, COEFF, target, l2_coeff))


def _attr(target, l2_coeff=0.0):
    return paddle.ParamAttr(
        initializer=paddle.nn.initializer.Assign(W0),
        regularizer=KurtosisDecay(COEFF, target, l2_coeff=l2_coeff),
    )


class Net(paddle.nn.Layer):
    def __init__(self, target=TARGET, l2_coeff=0.0):
        super().__init__()
        self.w = self.create_parameter([6, 4], attr=_attr(target, l2_coeff))

    def forward(self, x):
        return paddle.matmul(x, self.w).square().mean()


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("l2_coeff", [0.0, 0.3])
def test_sgd_step_dygraph(l2_coeff, target):
    net = Net(target, l2_coeff)
    opt = paddle.optimizer.SGD(LR, parameters=net.parameters())
    net(paddle.to_tensor(X)).backward()
    opt.step()
    np.testing.assert_allclose(net.w.numpy(), expected_sgd(W0, target, l2_coeff), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("target", TARGETS)
def test_sgd_step_to_static(target):
    net = Net(target)
    static_net = paddle.jit.to_static(net, full_graph=True)
    opt = paddle.optimizer.SGD(LR, parameters=net.parameters())
    static_net(paddle.to_tensor(X)).backward()
    opt.step()
    np.testing.assert_allclose(net.w.numpy(), expected_sgd(W0, target), rtol=1e-5, atol=1e-6)


def _static_sgd_step(as_optimizer_weight_decay, target):
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup):
        x = paddle.static.data("x", [5, 6], "float32")
        if as_optimizer_weight_decay:
            attr = paddle.ParamAttr(name="w", initializer=paddle.nn.initializer.Assign(W0))
            opt = paddle.optimizer.SGD(LR, weight_decay=KurtosisDecay(COEFF, target))
        else:
            attr = _attr(target)
            attr.name = "w"
            opt = paddle.optimizer.SGD(LR)
        w = paddle.static.create_parameter([6, 4], "float32", attr=attr)
        loss = ((x @ w) ** 2).mean()
        opt.minimize(loss)
    exe = paddle.static.Executor(paddle.CPUPlace())
    exe.run(startup)
    exe.run(main, feed={"x": X})
    return np.array(paddle.static.global_scope().find_var("w").get_tensor())


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("as_weight_decay", [False, True], ids=["param_attr", "optimizer_weight_decay"])
@pytest.mark.parametrize("ir", ["pir", "legacy"])
def test_sgd_step_static(ir, as_weight_decay, target):
    with static_mode(ir):
        w1 = _static_sgd_step(as_weight_decay, target)
    np.testing.assert_allclose(w1, expected_sgd(W0, target), rtol=1e-5, atol=1e-6)


def _one_step(make_opt, target=TARGET):
    net = Net(target)
    opt = make_opt(net.parameters())
    net(paddle.to_tensor(X)).backward()
    opt.step()
    return net.w.numpy()


@pytest.mark.parametrize("target", TARGETS)
def test_momentum_first_steps_exact(target):
    net = Net(target)
    opt = paddle.optimizer.Momentum(LR, momentum=0.9, parameters=net.parameters())
    w, v = W0.astype(np.float64), np.zeros_like(W0, dtype=np.float64)
    for _ in range(2):
        net(paddle.to_tensor(X)).backward()
        opt.step()
        opt.clear_grad()
        v = 0.9 * v + loss_grad(w) + kure_term(w, COEFF, target)
        w = w - LR * v
        np.testing.assert_allclose(net.w.numpy(), w, rtol=1e-4, atol=1e-5)


def _adam_first_step(w, g, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    # Paddle's Adam: lr_t = lr sqrt(1 - b2^t) / (1 - b1^t); w -= lr_t m / (sqrt(v) + eps sqrt(1 - b2^t))
    m, v = (1 - beta1) * g, (1 - beta2) * g * g
    lr_t = lr * np.sqrt(1 - beta2) / (1 - beta1)
    return w - lr_t * m / (np.sqrt(v) + eps * np.sqrt(1 - beta2))


@pytest.mark.parametrize("target", TARGETS)
def test_adam_first_step_exact(target):
    lr = 1e-3
    got = _one_step(lambda p: paddle.optimizer.Adam(lr, parameters=p), target)
    g = loss_grad(W0) + kure_term(W0, COEFF, target)
    np.testing.assert_allclose(got, _adam_first_step(W0.astype(np.float64), g, lr), rtol=1e-5, atol=1e-7)


def test_adamw_keeps_param_regularizer_and_decoupled_decay():
    lr, wd = 1e-3, 0.01
    got = _one_step(lambda p: paddle.optimizer.AdamW(lr, parameters=p, weight_decay=wd))
    g = loss_grad(W0) + kure_term(W0, COEFF, TARGET)
    decayed = W0.astype(np.float64) * (1 - lr * wd)
    np.testing.assert_allclose(got, _adam_first_step(decayed, g, lr), rtol=1e-5, atol=1e-7)


def _kurtosis_distance_after_adam(coeff, w0, steps=150):
    layer = paddle.nn.Linear(
        64, 64,
        weight_attr=paddle.ParamAttr(
            initializer=paddle.nn.initializer.Assign(w0), regularizer=KurtosisDecay(coeff=coeff)
        ),
    )
    opt = paddle.optimizer.Adam(5e-2, parameters=layer.parameters())
    x = paddle.to_tensor(RNG.normal(size=(32, 64)).astype("float32"))
    target = paddle.to_tensor(RNG.normal(size=(32, 64)).astype("float32"))
    for _ in range(steps):
        paddle.nn.functional.mse_loss(layer(x), target).backward()
        opt.step()
        opt.clear_grad()
    return abs(ref_kurtosis(layer.weight.numpy()) - 1.8)


def test_adam_training_moves_kurtosis_to_target():
    w0 = RNG.laplace(size=(64, 64)).astype("float32")
    start = abs(ref_kurtosis(w0) - 1.8)
    assert start > 2.0
    assert _kurtosis_distance_after_adam(1.0, w0) < 0.2 * start
    assert _kurtosis_distance_after_adam(0.0, w0) > 0.5 * start  # the task alone does not do it


def test_frozen_parameter_is_left_alone():
    net = Net()
    net.w.stop_gradient = True
    bias = net.create_parameter([4], is_bias=True)
    opt = paddle.optimizer.SGD(LR, parameters=[net.w, bias], weight_decay=KurtosisDecay(COEFF))
    (net(paddle.to_tensor(X)) + bias.sum()).backward()
    opt.step()
    np.testing.assert_array_equal(net.w.numpy(), W0)


def test_save_load_and_jit_save_of_a_regularized_model(tmp_path):
    net = Net()
    opt = paddle.optimizer.Adam(1e-3, parameters=net.parameters())
    net(paddle.to_tensor(X)).backward()
    opt.step()
    paddle.save(net.state_dict(), str(tmp_path / "net.pdparams"))
    paddle.save(opt.state_dict(), str(tmp_path / "net.pdopt"))
    restored = Net()
    restored.set_state_dict(paddle.load(str(tmp_path / "net.pdparams")))
    np.testing.assert_array_equal(restored.w.numpy(), net.w.numpy())
    assert isinstance(restored.w.regularizer, KurtosisDecay)

    spec = [paddle.static.InputSpec([None, 6], "float32")]
    paddle.jit.save(net, str(tmp_path / "infer"), input_spec=spec)
    loaded = paddle.jit.load(str(tmp_path / "infer"))
    np.testing.assert_allclose(float(loaded(paddle.to_tensor(X))), float(net(paddle.to_tensor(X))), rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, error, text",
    [
        ({"coeff": -1.0}, ValueError, "coeff"),
        ({"coeff": 1.0, "l2_coeff": -0.1}, ValueError, "l2_coeff"),
        ({"coeff": 1.0, "target": 0.5}, ValueError, "target"),
        ({"coeff": "big"}, TypeError, "coeff"),
        ({"coeff": float("nan")}, ValueError,
         r"KurtosisDecay.coeff must be a finite number in \[0, 3.40282e\+38\], got nan"),
        ({"coeff": 1e39}, ValueError, r"KurtosisDecay.coeff must be a finite number in \[0, 3.40282e\+38\]"),
        ({"min_ndim": 0}, ValueError, "min_ndim"),
        ({"min_ndim": 2.0}, TypeError, "min_ndim"),
    ],
)
def test_bad_arguments(kwargs, error, text):
    with pytest.raises(error, match=text):
        KurtosisDecay(**kwargs)


def test_str_reads_like_paddle():
    assert str(KurtosisDecay(0.01)) == "KurtosisDecay, coeff=0.010000, target=1.800000"
    assert str(KurtosisDecay(0.01, 3.0, 1e-4)) == "KurtosisDecay, coeff=0.010000, target=3.000000, l2_coeff=0.000100"
    assert str(KurtosisDecay(0.01, 3.0, 1e-4, min_ndim=1)) == (
        "KurtosisDecay, coeff=0.010000, target=3.000000, l2_coeff=0.000100, min_ndim=1")
    assert isinstance(KurtosisDecay(0.1), paddle.regularizer.WeightDecayRegularizer)
    assert paddle_kure.KurtosisDecay is KurtosisDecay


def _bias_net():
    net = paddle.nn.Linear(6, 4, weight_attr=paddle.ParamAttr(initializer=paddle.nn.initializer.Assign(W0)),
                           bias_attr=paddle.ParamAttr(initializer=paddle.nn.initializer.Assign(W0[0])))
    return net


@pytest.mark.parametrize("min_ndim", [2, 1])
def test_optimizer_wide_decay_leaves_kurtosis_off_1d_parameters(min_ndim):
    """As an optimizer's weight_decay, the kurtosis term reaches weights only
    (biases get the L2 part), unless min_ndim=1 opts them back in."""
    l2 = 0.3
    net = _bias_net()
    decay = KurtosisDecay(COEFF, TARGET, l2_coeff=l2, min_ndim=min_ndim)
    opt = paddle.optimizer.SGD(LR, parameters=net.parameters(), weight_decay=decay)
    out = net(paddle.to_tensor(X))
    out.square().mean().backward()
    grad_b = net.bias.grad.numpy().astype(np.float64)
    opt.step()
    b0 = W0[0].astype(np.float64)
    bias_term = kure_term(b0, COEFF, TARGET, l2) if min_ndim == 1 else l2 * b0
    np.testing.assert_allclose(net.bias.numpy(), b0 - LR * (grad_b + bias_term), rtol=1e-5, atol=1e-6)
    x = X.astype(np.float64)
    grad_w = 2.0 * x.T @ (x @ W0 + b0) / (x.shape[0] * 4)
    np.testing.assert_allclose(net.weight.numpy(), W0 - LR * (grad_w + kure_term(W0, COEFF, TARGET, l2)),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("ir", ["pir", "legacy"])
def test_optimizer_wide_decay_static_skips_1d_parameters(ir):
    with static_mode(ir):
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            b = paddle.static.create_parameter([4], "float32", attr=paddle.ParamAttr(
                name="b", initializer=paddle.nn.initializer.Assign(W0[0])))
            loss = paddle.mean(b * 1.0)  # d loss / d b = 1/4
            paddle.optimizer.SGD(LR, weight_decay=KurtosisDecay(COEFF, TARGET, l2_coeff=0.3)).minimize(loss)
        exe = paddle.static.Executor(paddle.CPUPlace())
        exe.run(startup)
        exe.run(main)
        b1 = np.array(paddle.static.global_scope().find_var("b").get_tensor())
    np.testing.assert_allclose(b1, W0[0] - LR * (0.25 + 0.3 * W0[0]), rtol=1e-5, atol=1e-6)


class PlainNet(paddle.nn.Layer):
    """Net's weight without a ParamAttr regularizer, for the apply_to_grads_ path."""

    def __init__(self):
        super().__init__()
        self.w = self.create_parameter([6, 4], attr=paddle.ParamAttr(initializer=paddle.nn.initializer.Assign(W0)))

    def forward(self, x):
        return paddle.matmul(x, self.w).square().mean()


@pytest.mark.parametrize("l2_coeff", [0.0, 0.3])
def test_apply_to_grads_momentum_steps_exact(l2_coeff):
    net = PlainNet()
    kure = KurtosisDecay(COEFF, TARGET, l2_coeff=l2_coeff)
    opt = paddle.optimizer.Momentum(LR, momentum=0.9, parameters=net.parameters())
    w, v = W0.astype(np.float64), np.zeros_like(W0, dtype=np.float64)
    for _ in range(2):
        net(paddle.to_tensor(X)).backward()
        kure.apply_to_grads_(net.parameters())
        opt.step()
        opt.clear_grad()
        v = 0.9 * v + loss_grad(w) + kure_term(w, COEFF, TARGET, l2_coeff)
        w = w - LR * v
        np.testing.assert_allclose(net.w.numpy(), w, rtol=1e-4, atol=1e-5)


def test_apply_to_grads_adam_step_exact_and_same_as_param_attr():
    lr = 1e-3
    net = PlainNet()
    opt = paddle.optimizer.Adam(lr, parameters=net.parameters())
    net(paddle.to_tensor(X)).backward()
    KurtosisDecay(COEFF, TARGET).apply_to_grads_(net.w)
    opt.step()
    g = loss_grad(W0) + kure_term(W0, COEFF, TARGET)
    np.testing.assert_allclose(net.w.numpy(), _adam_first_step(W0.astype(np.float64), g, lr), rtol=1e-5, atol=1e-7)
    # the regularizer mechanism computes the same float32 gradient term
    np.testing.assert_allclose(net.w.numpy(), _one_step(lambda p: paddle.optimizer.Adam(lr, parameters=p)),
                               rtol=1e-6, atol=1e-9)


def test_apply_to_grads_writes_the_gradient_in_place_and_skips_missing_grads():
    net, frozen = PlainNet(), PlainNet()
    net(paddle.to_tensor(X)).backward()
    before = net.w.grad.numpy().astype(np.float64)
    KurtosisDecay(COEFF, TARGET, l2_coeff=0.1).apply_to_grads_([net.w, frozen.w])  # frozen.w has no grad
    np.testing.assert_allclose(net.w.grad.numpy(), before + kure_term(W0, COEFF, TARGET, 0.1), rtol=1e-5, atol=1e-7)
    assert frozen.w.grad is None


def test_apply_to_grads_bad_input():
    kure = KurtosisDecay(COEFF)
    with pytest.raises(TypeError, match="Tensor"):
        kure.apply_to_grads_([np.ones(3)])
    with pytest.raises(ValueError, match="twice"):
        kure.apply_to_grads_(Net().parameters())  # already regularized through ParamAttr
    with static_mode("pir"):
        with pytest.raises(RuntimeError, match="dygraph"):
            kure.apply_to_grads_([])


def test_apply_to_grads_gives_1d_parameters_the_l2_part_only():
    net = _bias_net()
    kure = KurtosisDecay(COEFF, TARGET, l2_coeff=0.3)
    net(paddle.to_tensor(X)).square().mean().backward()
    grad_b = net.bias.grad.numpy().astype(np.float64)
    kure.apply_to_grads_(net.parameters())
    np.testing.assert_allclose(net.bias.grad.numpy(), grad_b + 0.3 * W0[0], rtol=1e-5, atol=1e-6)
