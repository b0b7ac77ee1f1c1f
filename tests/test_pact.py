"""PACT: forward values and the paper's gradients against hand-computed numbers,
alpha initialization, and the exact optimizer update of alpha."""

import numpy as np
import paddle
import pytest
from graph_modes import static_mode

from paddle_kure.nn import PACT, calibrate_pact, pact

X = np.array([-3.0, -2.0, -1.0, 0.0, 0.5, 2.0, 3.0], dtype="float32")
G = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], dtype="float32")  # upstream gradient


def _run(signed):
    x = paddle.to_tensor(X, stop_gradient=False)
    alpha = paddle.to_tensor([2.0], stop_gradient=False)
    y = pact(x, alpha, signed=signed)
    (y * paddle.to_tensor(G)).sum().backward()
    return y.numpy(), x.grad.numpy(), alpha.grad.numpy()


def test_unsigned_values_and_gradients_by_hand():
    y, dx, dalpha = _run(signed=False)
    np.testing.assert_array_equal(y, [0, 0, 0, 0, 0.5, 2, 2])
    # dy/dx = 1 on [0, alpha): x = 0 and 0.5
    np.testing.assert_array_equal(dx, [0, 0, 0, 4, 5, 0, 0])
    # dy/dalpha = 1 where x >= alpha: x = 2 (the boundary counts) and 3 -> 6 + 7
    np.testing.assert_array_equal(dalpha, [13.0])


def test_signed_values_and_gradients_by_hand():
    y, dx, dalpha = _run(signed=True)
    np.testing.assert_array_equal(y, [-2, -2, -1, 0, 0.5, 2, 2])
    np.testing.assert_array_equal(dx, [0, 0, 3, 4, 5, 0, 0])
    # +1 where x >= alpha (6 + 7), -1 where x <= -alpha (1 + 2)
    np.testing.assert_array_equal(dalpha, [13.0 - 3.0])


@pytest.mark.parametrize("signed", [False, True])
def test_alpha_gradient_matches_finite_differences(signed):
    rng = np.random.default_rng(0)
    x = rng.normal(0, 2, size=500)
    x = x[np.abs(np.abs(x) - 1.5) > 1e-2]  # keep away from the kinks
    weights = rng.normal(size=x.size)

    def loss(a):
        lo = -a if signed else 0.0
        return float(np.sum(np.clip(x, lo, a) * weights))

    eps = 1e-4
    numeric = (loss(1.5 + eps) - loss(1.5 - eps)) / (2 * eps)
    layer = PACT(init=1.5, signed=signed)
    layer.alpha.set_value(np.array([1.5], dtype="float32"))
    out = layer(paddle.to_tensor(x, dtype="float64").astype("float32"))
    (out * paddle.to_tensor(weights.astype("float32"))).sum().backward()
    np.testing.assert_allclose(layer.alpha.grad.numpy()[0], numeric, rtol=1e-4)


def test_constant_and_data_initialization():
    assert float(PACT(init=6.0).alpha.numpy()[0]) == 6.0
    rng = np.random.default_rng(1)
    batch = rng.normal(0, 1, size=(64, 32)).astype("float32")

    unsigned = PACT(init="abs_max")
    unsigned(paddle.to_tensor(batch))  # the first batch seen initializes alpha
    np.testing.assert_allclose(unsigned.alpha.numpy()[0], batch.max(), rtol=1e-6)

    signed = PACT(init="abs_max", signed=True)
    signed(paddle.to_tensor(batch))
    np.testing.assert_allclose(signed.alpha.numpy()[0], np.abs(batch).max(), rtol=1e-6)

    model = paddle.nn.Sequential(paddle.nn.Identity(), PACT(init="percentile", percentile=90.0))
    alphas = calibrate_pact(model, paddle.to_tensor(batch))
    expected = np.percentile(batch[batch > 0].astype("float64"), 90.0)
    assert list(alphas) == ["1"]
    np.testing.assert_allclose(alphas["1"], expected, rtol=1e-6)
    # Only the first batch initializes: a later, larger batch does not move alpha.
    model(paddle.to_tensor(batch * 10))
    np.testing.assert_allclose(model[1].alpha.numpy()[0], expected, rtol=1e-6)


def test_l2_and_learning_rate_multiplier_give_the_exact_sgd_update():
    layer = PACT(init=4.0, l2_coeff=0.1, learning_rate=10.0)
    # The optimizer's weight_decay must not reach alpha: its own L2Decay replaces it.
    opt = paddle.optimizer.SGD(learning_rate=0.01, parameters=layer.parameters(), weight_decay=0.5)
    x = paddle.to_tensor([1.0, 5.0, 6.0, -1.0])
    layer(x).sum().backward()  # dL/dalpha = 2 (two inputs >= 4)
    opt.step()
    expected = 4.0 - 0.01 * 10.0 * (2.0 + 0.1 * 4.0)
    np.testing.assert_allclose(layer.alpha.numpy()[0], expected, rtol=1e-6)


@pytest.mark.parametrize("ir", ["legacy", "pir"])
def test_static_graph_gives_the_same_values_and_gradients(ir):
    with static_mode(ir):
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            x = paddle.static.data("x", [7], "float32")
            x.stop_gradient = False
            upstream = paddle.static.data("g", [7], "float32")
            alpha = paddle.static.create_parameter(
                [1], "float32", default_initializer=paddle.nn.initializer.Constant(2.0))
            y = pact(x, alpha, signed=True)
            # paddle.sum rejects legacy Variables; mean * n is the same sum.
            grads = paddle.static.gradients([paddle.mean(y * upstream) * float(X.size)], [x, alpha])
        exe = paddle.static.Executor(paddle.CPUPlace())
        exe.run(startup)
        y_val, dx, dalpha = exe.run(main, feed={"x": X, "g": G}, fetch_list=[y, *grads])
    ref_y, ref_dx, ref_dalpha = _run(signed=True)
    np.testing.assert_array_equal(y_val, ref_y)
    np.testing.assert_array_equal(dx, ref_dx)
    np.testing.assert_array_equal(dalpha, ref_dalpha)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="abs_max"):
        PACT(init="max")
    with pytest.raises(ValueError, match=r"PACT.init must be a finite number > 0, got 0.0"):
        PACT(init=0.0)
    with pytest.raises(ValueError, match="percentile"):
        PACT(init="percentile", percentile=150)
    with pytest.raises(ValueError, match="l2_coeff"):
        PACT(l2_coeff=-1.0)
    with pytest.raises(RuntimeError, match="constant"):
        PACT(init=1.0).init_alpha_from(np.ones(3))
    with pytest.raises(ValueError, match="no finite positive"):
        PACT(init="abs_max").init_alpha_from(-np.ones(3))


def test_uncalibrated_layer_refuses_to_be_traced():
    layer = PACT(init="abs_max")
    with pytest.raises(RuntimeError, match="calibrate_pact"):
        paddle.jit.to_static(layer, input_spec=[paddle.static.InputSpec([None, 4], "float32")], full_graph=True)(
            paddle.ones([2, 4])
        )


def test_str_shows_alpha_and_options():
    layer = PACT(init=6.0, signed=True, l2_coeff=0.01)
    assert str(layer) == "PACT(alpha=6, init=6.0, signed=True, l2_coeff=0.01)"
    assert "uncalibrated" in str(PACT())


# ---- pinned by mutation testing (tools/mutate.py) ------------------------------------------------

@pytest.mark.parametrize("kwargs, error, message", [
    ({"init": 0.0}, ValueError, "PACT.init must be a finite number > 0, got 0.0"),
    ({"init": True}, TypeError, "PACT.init must be a finite number > 0, got True"),
    ({"init": float("nan")}, ValueError, "PACT.init must be a finite number > 0, got nan"),
    ({"percentile": 0.0}, ValueError, "PACT.percentile must be a finite number > 0, got 0.0"),
    ({"percentile": "99"}, TypeError, "PACT.percentile must be a finite number > 0, got '99'"),
    ({"percentile": 100.5}, ValueError, "PACT: percentile must be in (0, 100]"),
    ({"l2_coeff": -0.1}, ValueError, "PACT.l2_coeff must be a finite number >= 0, got -0.1"),
    ({"learning_rate": 0.0}, ValueError, "PACT.learning_rate must be a finite number > 0, got 0.0"),
    ({"learning_rate": None}, TypeError, "PACT.learning_rate must be a finite number > 0, got None"),
])
def test_pact_argument_errors_name_the_argument(kwargs, error, message):
    with pytest.raises(error) as info:
        PACT(**kwargs)
    assert str(info.value).startswith(message)


def test_pact_bounds_defaults_text_and_alpha_attributes():
    layer = PACT(0.5, percentile=100, l2_coeff=0.0, learning_rate=2.0, name="act")
    assert layer.alpha.name == "act.alpha" and layer.alpha.optimize_attr["learning_rate"] == 2.0
    assert PACT().alpha.regularizer._coeff == 0.0  # no L2 on alpha by default
    assert PACT(0.5).alpha.name != "act.alpha"
    assert str(PACT("percentile", percentile=99.0)) == \
        "PACT(alpha=uncalibrated, init='percentile', signed=False, percentile=99.0)"
    assert layer.extra_repr() == "init=0.5, signed=False, learning_rate=2.0"
    assert PACT(0.5, l2_coeff=0.1).extra_repr() == "init=0.5, signed=False, l2_coeff=0.1"
    x = paddle.to_tensor([-1.0, 0.5, 3.0])
    np.testing.assert_allclose(pact(x, paddle.to_tensor([2.0])).numpy(), [0.0, 0.5, 2.0])  # unsigned by default
    x64 = paddle.to_tensor(np.array([-1.0, 0.5, 3.0]))
    np.testing.assert_allclose(pact(x64, paddle.to_tensor(np.array([2.0]))).numpy(), [0.0, 0.5, 2.0])


def test_alpha_from_data_statistics():
    x = np.r_[np.zeros(90), np.arange(1.0, 11.0)].astype("float32")  # zeros do not count unsigned
    assert PACT("percentile", percentile=50).init_alpha_from(x) == np.percentile(np.arange(1.0, 11.0), 50)
    assert PACT("abs_max", signed=True).init_alpha_from(np.array([-4.0, 1.0, 2.0])) == 4.0
    assert PACT("abs_max").init_alpha_from(np.array([0.5, 0.25])) == 0.5
    with pytest.raises(ValueError, match="alpha = 0"):
        PACT("abs_max", signed=True).init_alpha_from(np.zeros(4))
    layer = PACT("abs_max")
    assert calibrate_pact(layer, paddle.to_tensor([0.5, 3.0])) == {"": 3.0}  # the model itself is a PACT
