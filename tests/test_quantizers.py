"""Quantizers and binarizers: forward values and straight-through gradients against hand
computations and float64 numpy references."""
import numpy as np
import paddle
import pytest

from paddle_kure.nn.quantizers import (
    ActivationFakeQuant,
    IRNetBinarizer,
    QuantLinear,
    SignBinarizer,
    WeightFakeQuant,
    ede_parameters,
    make_weight_quantizer,
    quantize_linears,
)


def _forward_backward(layer, x, upstream):
    x = paddle.to_tensor(np.asarray(x, dtype="float32"), stop_gradient=False)
    out = layer(x)
    (out * paddle.to_tensor(np.asarray(upstream, dtype="float32"))).sum().backward()
    return out.numpy(), x.grad.numpy()


def _numpy_fake_quant(w, bits, per_channel):
    levels = 2 ** (bits - 1) - 1
    scale = (np.abs(w).max(axis=0, keepdims=True) if per_channel else np.abs(w).max()) / levels
    return np.clip(np.round(w / scale), -levels, levels) * scale


def test_weight_fake_quant_2bit_per_tensor_hand_values_and_identity_gradient():
    # levels {-1, 0, 1} * 0.9: 0.9 -> 1, -0.3 -> -0.33 -> 0, 0.2 -> 0, -0.6 -> -0.67 -> -1
    w = [[0.9, -0.3], [0.2, -0.6]]
    upstream = [[1.0, 2.0], [3.0, 4.0]]
    out, grad = _forward_backward(WeightFakeQuant(bits=2), w, upstream)
    np.testing.assert_allclose(out, [[0.9, 0.0], [0.0, -0.9]], rtol=1e-6)
    np.testing.assert_allclose(grad, upstream)


def test_weight_fake_quant_4bit_per_channel_hand_values():
    # column 0: scale 0.7/7 = 0.1 -> [0.7, -0.3, 0.1]; column 1: scale 1.4/7 = 0.2 -> [0.2, 1.4, -0.6]
    w = [[0.7, 0.21], [-0.33, 1.4], [0.12, -0.62]]
    out, _ = _forward_backward(WeightFakeQuant(bits=4, per_channel=True), w, np.ones((3, 2)))
    np.testing.assert_allclose(out, [[0.7, 0.2], [-0.3, 1.4], [0.1, -0.6]], rtol=1e-5)
    assert WeightFakeQuant(4, per_channel=True).storage_bits([3, 2]) == 6 * 4 + 2 * 32
    assert WeightFakeQuant(8).storage_bits([3, 2]) == 6 * 8 + 32


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("per_channel", [False, True])
def test_weight_fake_quant_matches_numpy_reference(bits, per_channel):
    w = np.random.RandomState(bits).randn(16, 8).astype("float32")
    out, _ = _forward_backward(WeightFakeQuant(bits, per_channel), w, np.ones_like(w))
    np.testing.assert_allclose(out, _numpy_fake_quant(w, bits, per_channel), rtol=1e-5, atol=1e-6)
    distinct = np.unique(out[:, 0]).size
    assert distinct <= 2 ** bits - 1


@pytest.mark.parametrize("bits", [0, 1, 17, 4.0, True])
def test_bad_bits_is_a_clear_error(bits):
    with pytest.raises(ValueError, match="bits must be an int in"):
        WeightFakeQuant(bits)


def test_activation_fake_quant_moving_average_range_values_and_clipped_gradient():
    quant = ActivationFakeQuant(bits=2, momentum=0.9)
    quant.train()
    quant(paddle.to_tensor([1.0, -2.0]))  # first batch sets the range to 2.0
    np.testing.assert_allclose(quant.abs_max.numpy(), [2.0])
    # second batch max 4.0: range = 0.9 * 2.0 + 0.1 * 4.0 = 2.2, so with one level the step is 2.2
    x = [-3.0, -1.0, 0.5, 1.2, 4.0]
    out, grad = _forward_backward(quant, x, np.ones(5))
    np.testing.assert_allclose(quant.abs_max.numpy(), [2.2], rtol=1e-6)
    np.testing.assert_allclose(out, [-2.2, 0.0, 0.0, 2.2, 2.2], rtol=1e-6)
    np.testing.assert_allclose(grad, [0.0, 1.0, 1.0, 1.0, 0.0])  # clipped values pass no gradient

    quant.eval()  # evaluation uses the stored range and leaves it alone
    out = quant(paddle.to_tensor([100.0, 0.3])).numpy()
    np.testing.assert_allclose(out, [2.2, 0.0], rtol=1e-6)
    np.testing.assert_allclose(quant.abs_max.numpy(), [2.2], rtol=1e-6)


def test_activation_fake_quant_eval_before_any_training_batch_fails():
    quant = ActivationFakeQuant(8)
    quant.eval()
    with pytest.raises(RuntimeError, match="no range yet"):
        quant(paddle.ones([2]))


def test_sign_binarizer_hand_values_and_xnor_gradient():
    # alpha = mean|w| = (0.5 + 1.5 + 0 + 0.25) / 4 = 0.5625; sign(0) is +1
    w = [[0.5, -1.5], [0.0, -0.25]]
    upstream = [[1.0, 2.0], [3.0, 4.0]]
    out, grad = _forward_backward(SignBinarizer(), w, upstream)
    np.testing.assert_allclose(out, [[0.5625, -0.5625], [0.5625, -0.5625]])
    # dL/dw = g * alpha * [|w| <= 1] + abs'(w) / 4 * sum(g * sign), sum(g * sign) = 1 - 2 + 3 - 4 = -2,
    # abs'(0) = 0 in Paddle
    expected = [[1 * 0.5625 - 0.5, 0.0 + 0.5], [3 * 0.5625 + 0.0, 4 * 0.5625 + 0.5]]
    np.testing.assert_allclose(grad, expected, rtol=1e-6)
    assert SignBinarizer().storage_bits([2, 2]) == 4 + 32


def test_sign_binarizer_per_channel_scales_each_output_column():
    w = np.array([[1.0, -0.2], [-3.0, 0.6]])
    out, _ = _forward_backward(SignBinarizer(per_channel=True), w, np.ones((2, 2)))
    np.testing.assert_allclose(out, [[2.0, -0.4], [-2.0, 0.4]], rtol=1e-6)
    assert SignBinarizer(per_channel=True).storage_bits([2, 2]) == 4 + 2 * 32


@pytest.mark.parametrize("epoch, expected", [(0, (10.0, 0.1)), (5, (1.0, 1.0)), (10, (1.0, 10.0)),
                                             (2, (10 ** 0.6, 10 ** -0.6))])
def test_ede_schedule(epoch, expected):
    np.testing.assert_allclose(ede_parameters(epoch, 10), expected, rtol=1e-12)


def test_ede_schedule_rejects_epoch_outside_range():
    with pytest.raises(ValueError, match="epoch"):
        ede_parameters(11, 10)


def _irnet_weight():
    # column 0: mean 3, population std sqrt(3.5), mean|w_std| = 0.80 -> scale 2**0 = 1
    # column 1: seven 0s and an 8: std sqrt(7), mean|w_std| = 0.66 -> scale 2**-1
    col0 = [1.0, 2.0, 3.0, 6.0] * 2
    col1 = [0.0] * 7 + [8.0]
    return np.array([col0, col1], dtype="float64").T


def test_irnet_forward_is_binary_with_power_of_two_channel_scale():
    out, _ = _forward_backward(IRNetBinarizer(), _irnet_weight(), np.ones((8, 2)))
    np.testing.assert_allclose(out[:, 0], [-1.0, -1.0, 1.0, 1.0] * 2)
    np.testing.assert_allclose(out[:, 1], [-0.5] * 7 + [0.5])
    assert IRNetBinarizer().storage_bits([8, 2]) == 16 + 2 * 32


def _numerical_gradient(f, w, step=1e-6):
    grad = np.zeros_like(w)
    for index in np.ndindex(*w.shape):
        plus, minus = w.copy(), w.copy()
        plus[index] += step
        minus[index] -= step
        grad[index] = (f(plus) - f(minus)) / (2 * step)
    return grad


@pytest.mark.parametrize("epoch", [0, 3, 10])
def test_irnet_backward_is_ede_through_the_standardization(epoch):
    w = np.random.RandomState(epoch).randn(6, 3)
    upstream = np.random.RandomState(epoch + 100).randn(6, 3)
    binarizer = IRNetBinarizer()
    binarizer.set_progress(epoch, 10)
    k, t = ede_parameters(epoch, 10)
    _, grad = _forward_backward(binarizer, w, upstream)

    def standardize(v):
        centered = v - v.mean(axis=0)
        return centered / np.sqrt((centered ** 2).mean(axis=0) + 1e-8)

    scale = 2.0 ** np.round(np.log2(np.abs(standardize(w)).mean(axis=0)))  # a constant in backward

    def surrogate_loss(v):  # EDE: sign(z) differentiated as k * tanh(t * z)
        return float((upstream * scale * k * np.tanh(t * standardize(v))).sum())

    np.testing.assert_allclose(grad, _numerical_gradient(surrogate_loss, w), rtol=2e-3, atol=1e-4)


def test_quant_linear_reuses_parameters_and_computes_with_quantized_weight():
    linear = paddle.nn.Linear(3, 2)
    layer = QuantLinear(linear, SignBinarizer())
    assert layer.weight is linear.weight and layer.bias is linear.bias
    assert sorted(layer.state_dict()) == sorted(linear.state_dict())
    x = np.random.RandomState(0).randn(4, 3).astype("float32")
    w, b = linear.weight.numpy(), linear.bias.numpy()
    binary = np.abs(w).mean() * np.where(w >= 0, 1.0, -1.0)
    np.testing.assert_allclose(layer(paddle.to_tensor(x)).numpy(), x @ binary + b, rtol=1e-5, atol=1e-6)
    layer.enabled = False  # latent phase: the plain linear
    np.testing.assert_allclose(layer(paddle.to_tensor(x)).numpy(), x @ w + b, rtol=1e-5, atol=1e-6)


def test_full_quant_linear_quantizes_inputs_and_counts_the_range():
    layer = QuantLinear(paddle.nn.Linear(4, 2), WeightFakeQuant(8), ActivationFakeQuant(8))
    x = np.random.RandomState(1).randn(5, 4).astype("float32")
    out = layer(paddle.to_tensor(x)).numpy()
    w, b = layer.weight.numpy(), layer.bias.numpy()
    x_q = _numpy_fake_quant(x.reshape(-1, 1), 8, False).reshape(x.shape)  # first batch: range = max|x|
    np.testing.assert_allclose(out, x_q @ _numpy_fake_quant(w, 8, False) + b, rtol=1e-5, atol=1e-5)
    assert layer.storage_bits() == 8 * 8 + 32 + 2 * 32 + 32


def test_quant_linear_rejects_non_linear():
    with pytest.raises(TypeError, match="paddle.nn.Linear"):
        QuantLinear(paddle.nn.Conv2D(1, 1, 1), WeightFakeQuant(8))


def test_binarized_weights_still_learn_through_the_straight_through_gradient():
    rng = np.random.RandomState(0)
    x = rng.randn(64, 8).astype("float32")
    y = (x @ rng.randn(8, 1) > 0).astype("float32")
    model = QuantLinear(paddle.nn.Linear(8, 1), SignBinarizer())
    opt = paddle.optimizer.Adam(0.05, parameters=model.parameters())
    losses = []
    for _ in range(60):
        loss = paddle.nn.functional.binary_cross_entropy_with_logits(model(paddle.to_tensor(x)),
                                                                     paddle.to_tensor(y))
        loss.backward()
        opt.step()
        opt.clear_grad()
        losses.append(float(loss))
    assert losses[-1] < 0.6 * losses[0]


# ---- pinned by mutation testing (tools/mutate.py) ------------------------------------------------

def test_defaults_bounds_and_buffers():
    assert WeightFakeQuant().bits == 8 and ActivationFakeQuant().bits == 8 and ActivationFakeQuant(4).bits == 4
    WeightFakeQuant(16)
    ActivationFakeQuant(momentum=0.0)
    for momentum in (1.0, -0.1):
        with pytest.raises(ValueError, match="momentum"):
            ActivationFakeQuant(momentum=momentum)
    assert [list(b.shape) for b in ActivationFakeQuant().buffers()] == [[1], [1]]
    with pytest.raises(ValueError, match="epoch"):
        ede_parameters(0, 0)
    for t_min, t_max in ((0.0, 1.0), (2.0, 2.0)):
        with pytest.raises(ValueError, match="t_min"):
            IRNetBinarizer(t_min, t_max)
    binarizer = IRNetBinarizer(0.5, 2.0)
    assert (binarizer.k, binarizer.t) == (2.0, 0.5)  # epoch 0: t = t_min, k = 1 / t
    binarizer.set_progress(1, 1)
    assert (binarizer.k, binarizer.t) == pytest.approx((1.0, 2.0))
    assert (IRNetBinarizer().k, IRNetBinarizer().t) == pytest.approx((10.0, 0.1))


def test_zero_tensors_stay_zero_and_small_ranges_are_kept():
    zeros = paddle.zeros([3, 4])
    assert not WeightFakeQuant(4)(zeros).numpy().any()
    act = ActivationFakeQuant(4)
    assert not act(zeros).numpy().any() and np.isfinite(act(zeros).numpy()).all()
    act = ActivationFakeQuant(4)
    x = paddle.to_tensor(np.array([0.5, -0.25, 0.1], dtype="float32"))
    np.testing.assert_allclose(act(x).numpy(), np.round(x.numpy() / (0.5 / 7)) * (0.5 / 7), rtol=1e-6)
    act.eval()
    np.testing.assert_allclose(act(paddle.to_tensor([-2.0, 2.0])).numpy(), [-0.5, 0.5], rtol=1e-6)  # clipped


def test_irnet_constant_channel_is_finite():
    weight = paddle.to_tensor(np.array([[1.0, 0.5], [1.0, -0.5], [1.0, 0.25]], dtype="float32"))
    assert np.isfinite(IRNetBinarizer()(weight).numpy()).all()


def test_sign_binarizer_gradient_is_zero_outside_minus_one_to_one():
    w = np.array([[2.0, -0.5], [0.25, -3.0]], dtype="float32")
    weight = paddle.to_tensor(w, stop_gradient=False)
    SignBinarizer()(weight).sum().backward()
    alpha = np.abs(w).mean()  # the signs sum to 0, so alpha's own gradient drops out
    np.testing.assert_allclose(weight.grad.numpy(), alpha * np.array([[0.0, 1.0], [1.0, 0.0]]), rtol=1e-6)


def test_storage_bits_per_output_channel():
    assert WeightFakeQuant(4, per_channel=True).storage_bits([3, 5]) == 15 * 4 + 5 * 32
    assert SignBinarizer(per_channel=True).storage_bits([3, 5]) == 15 + 5 * 32
    assert SignBinarizer().storage_bits([3, 5]) == 15 + 32


def test_quant_linear_adds_the_bias():
    linear = paddle.nn.Linear(3, 2)
    linear.bias.set_value(np.array([1.0, -2.0], dtype="float32"))
    x = np.ones((1, 3), dtype="float32")
    layer = QuantLinear(linear, WeightFakeQuant(8))
    expected = x @ WeightFakeQuant(8)(linear.weight).numpy() + [1.0, -2.0]
    np.testing.assert_allclose(layer(paddle.to_tensor(x)).numpy(), expected, rtol=1e-6)


def _groups_model():
    model = paddle.nn.Sequential(paddle.nn.Linear(4, 4), paddle.nn.Sequential(paddle.nn.Linear(4, 4)))
    names = ("q", "k", "v", "out", "ffn", "classifier", "final")
    return model, {name: (["0"] if name == "q" else ["1.0"] if name == "ffn" else []) for name in names}


def test_quantize_linears_defaults_and_options():
    model, groups = _groups_model()
    assert quantize_linears(model, groups, "all", "weight") == ["0", "1.0"]
    weight = model[0].weight_quantizer
    assert (weight.bits, weight.per_channel, model[0].input_quantizer) == (8, False, None)
    model, groups = _groups_model()
    quantize_linears(model, groups, "all", "full", bits=4, per_channel=True, momentum=0.5)
    layer = model[1][0]
    assert (layer.weight_quantizer.bits, layer.weight_quantizer.per_channel) == (4, True)
    assert (layer.input_quantizer.bits, layer.input_quantizer.momentum) == (4, 0.5)
    assert quantize_linears(*_groups_model(), "attention", "binary", per_channel=True) == ["0"]


def test_make_weight_quantizer_defaults_and_options():
    default = make_weight_quantizer("weight")
    assert (type(default), default.bits, default.per_channel) == (WeightFakeQuant, 8, False)
    assert make_weight_quantizer("full", 4, True).per_channel is True
    assert make_weight_quantizer("binary", per_channel=True).per_channel is True
    assert make_weight_quantizer("binary").per_channel is False
    irnet = make_weight_quantizer("irnet")
    assert (irnet.k, irnet.t) == pytest.approx((10.0, 0.1))


def test_quant_linear_text():
    layer = QuantLinear(paddle.nn.Linear(3, 2), WeightFakeQuant(4), ActivationFakeQuant(8))
    layer.enabled = False
    assert layer.extra_repr() == (f"in=3, out=2, weight={layer.weight_quantizer}, "
                                  f"input={layer.input_quantizer}, enabled=False")
    assert QuantLinear(paddle.nn.Linear(3, 2), SignBinarizer()).extra_repr() == \
        f"in=3, out=2, weight={SignBinarizer()}"
    binarizer = IRNetBinarizer(0.5, 2.0)
    assert binarizer.extra_repr() == "k=2, t=0.5"
