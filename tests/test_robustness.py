"""Step-size robustness: quantizer values, scale search, weight restore, the sweep."""
import warnings

import numpy as np
import paddle
import pytest

from paddle_kure.robustness import (
    SCALE_METHODS,
    SweepConfig,
    abs_max_scale,
    channel_axis,
    mse_scale,
    quantize_array,
    quantized_weights,
    scale_ratio,
    sweep,
    weight_scales,
)


def test_quantize_array_hand_values():
    w = np.array([0.5, -1.0, 0.26, 2.0], dtype=np.float32)
    # bits 3: qmax 3, scale 1: 0.5 -> round(1.5)=2 -> 2/3; 0.26 -> round(0.78)=1 -> 1/3; 2.0 clips to 1
    np.testing.assert_allclose(quantize_array(w, 3, 1.0), [2 / 3, -1.0, 1 / 3, 1.0], rtol=1e-6)


def test_quantize_array_per_channel_and_zero_scale():
    w = np.array([[1.0, 0.0], [0.5, 0.0], [-0.25, 0.0]], dtype=np.float32)  # channels along axis 1
    scale = abs_max_scale(w, axis=1)
    np.testing.assert_array_equal(scale, [1.0, 0.0])
    q = quantize_array(w, 2, scale, axis=1)  # qmax 1: values in {-1, 0, 1} * scale
    np.testing.assert_array_equal(q, [[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    assert np.isfinite(q).all()


def test_bits_below_two_rejected():
    with pytest.raises(ValueError, match="bits"):
        quantize_array(np.ones(3), 1, 1.0)


@pytest.mark.parametrize("axis", [None, 0])
def test_mse_scale_beats_abs_max_on_heavy_tails(axis):
    w = np.random.default_rng(0).laplace(size=(8, 512)).astype(np.float64)
    base = abs_max_scale(w, axis)
    best = mse_scale(w, 4, axis)
    err = lambda s: ((quantize_array(w, 4, s, axis) - w) ** 2).sum()
    assert np.all(best <= base + 1e-12)
    assert err(best) < 0.8 * err(base)  # clipping the tails pays at 4 bits


@pytest.mark.parametrize("bits", [3, 4])
def test_mse_scale_per_channel_is_each_channels_own_search(bits):
    # channels of different scale and shape: the best clipping fraction differs per channel,
    # so a search that minimized the error summed over the tensor would not give these
    rng = np.random.default_rng(5)
    channels = [rng.uniform(-1, 1, 256), 30.0 * rng.laplace(size=256), 1e-3 * rng.standard_t(2, 256),
                rng.normal(size=256) ** 3, np.r_[rng.normal(size=255), 40.0]]
    w = np.stack(channels, axis=1)  # channels along axis 1, as in a Linear weight
    per_channel = mse_scale(w, bits, axis=1)
    alone = [mse_scale(w[:, c], bits) for c in range(w.shape[1])]
    np.testing.assert_allclose(per_channel, alone, rtol=1e-12)
    fractions = per_channel / abs_max_scale(w, axis=1)
    assert fractions.max() - fractions.min() > 0.1


def _model():
    paddle.seed(0)
    return paddle.nn.Sequential(paddle.nn.Linear(6, 5), paddle.nn.ReLU(), paddle.nn.Linear(5, 3))


def test_quantized_weights_applies_and_restores_even_on_error():
    model = _model()
    before = [p.numpy().copy() for p in model.parameters()]
    with pytest.raises(RuntimeError):
        with quantized_weights(model, bits=2, per_channel=True):
            w = model[0].weight.numpy()
            # per output channel (axis 1 of a Linear weight): each column has at most 3 levels
            for col in w.T:
                assert len(np.unique(np.round(col, 6))) <= 3
            np.testing.assert_array_equal(model[0].bias.numpy(), before[1])  # biases untouched
            raise RuntimeError("stop")
    for p, b in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.numpy(), b)


def test_noise_is_seeded():
    model = _model()
    with quantized_weights(model, 4, noise_std=0.2, seed=1):
        a = model[0].weight.numpy()
    with quantized_weights(model, 4, noise_std=0.2, seed=1):
        b = model[0].weight.numpy()
    with quantized_weights(model, 4, noise_std=0.2, seed=2):
        c = model[0].weight.numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_sweep_records_and_accuracy_behaviour():
    model = _model()
    x = paddle.to_tensor(np.random.default_rng(1).normal(size=(256, 6)).astype("float32"))
    reference = model(x).argmax(-1).numpy()

    def agreement(m):
        return float((m(x).argmax(-1).numpy() == reference).mean())

    config = SweepConfig(bits=[8, 2], per_channel=[False], factors=[0.5, 1.0], noise_stds=[0.1], seeds=2)
    records = sweep(model, agreement, config)
    assert len(records) == 2 * (2 * 2 + 2)  # bits x (methods x factors + noise seeds)
    by_key = {(r.bits, r.scale_method, r.perturbation, r.value, r.seed): r.accuracy for r in records}
    assert by_key[(8, "abs_max", "ratio", 1.0, 0)] > 0.97
    assert by_key[(2, "abs_max", "ratio", 1.0, 0)] < by_key[(8, "abs_max", "ratio", 1.0, 0)]


@pytest.mark.parametrize(
    "kwargs, text",
    [({"bits": [1]}, "bits"), ({"factors": [0.0]}, "factors"), ({"noise_stds": [-1]}, "noise_stds"),
     ({"seeds": 0}, "seeds"), ({"scale_methods": ["percentile"]}, "abs_max"),
     ({"per_channel": []}, "per_channel"), ({"accuracy_fractions": [2.0]}, "fractions")],
)
def test_sweep_config_validation(kwargs, text):
    with pytest.raises(ValueError, match=text):
        SweepConfig(**kwargs)


def _heavy_tailed_model():
    """Two Linear layers with Laplace weights: abs-max wastes 3-bit levels on the tails."""
    paddle.seed(0)
    model = paddle.nn.Sequential(paddle.nn.Linear(16, 64), paddle.nn.ReLU(), paddle.nn.Linear(64, 4))
    rng = np.random.default_rng(3)
    for layer in (model[0], model[2]):
        layer.weight.set_value(rng.laplace(size=layer.weight.shape).astype("float32"))
    return model


def test_weight_scales_methods_and_ratio():
    model = _heavy_tailed_model()
    for per_channel in (False, True):
        abs_max = weight_scales(model, 3, per_channel, "abs_max")
        mse = weight_scales(model, 3, per_channel, "mse")
        w = model[0].weight.numpy()
        axis = 1 if per_channel else None  # Linear: output channels on axis 1
        np.testing.assert_array_equal(abs_max["0.weight"], abs_max_scale(w, axis))
        np.testing.assert_array_equal(mse["0.weight"], mse_scale(w, 3, axis))
        assert scale_ratio(model, abs_max, per_channel) == 1.0
        assert scale_ratio(model, mse, per_channel) < 0.9
    with quantized_weights(model, 3, scale_method="mse"):
        a = model[0].weight.numpy()
    with quantized_weights(model, 3, scales=weight_scales(model, 3, False, "mse")):
        np.testing.assert_array_equal(model[0].weight.numpy(), a)


def test_accuracy_scale_search_never_loses_on_calibration():
    model = _heavy_tailed_model()
    x = paddle.to_tensor(np.random.default_rng(4).normal(size=(512, 16)).astype("float32"))
    reference = model(x).argmax(-1).numpy()
    calls = []

    def agreement(m):
        calls.append(1)
        return float((m(x).argmax(-1).numpy() == reference).mean())

    fractions = [0.25, 0.5, 0.75, 1.0]
    chosen = weight_scales(model, 3, False, "accuracy", calibrate=agreement, fractions=fractions)
    assert len(calls) == 2 * len(fractions)  # one pass over the two weights
    abs_max = weight_scales(model, 3, False, "abs_max")
    for name in chosen:
        assert float(chosen[name] / abs_max[name]) in fractions
    with quantized_weights(model, 3, scales=abs_max):
        base = agreement(model)
    with quantized_weights(model, 3, scales=chosen):
        searched = agreement(model)
    assert searched > base  # the outliers make abs-max a poor 3-bit step
    assert scale_ratio(model, chosen) < 1.0


def test_accuracy_scale_errors():
    model = _model()
    with pytest.raises(ValueError, match="calibrate"):
        weight_scales(model, 4, scale_method="accuracy")
    # the message names the function and its own argument
    with pytest.raises(ValueError, match=r"^weight_scales\.fractions must be .* got 0\.0"):
        weight_scales(model, 4, scale_method="accuracy", calibrate=lambda m: 1.0, fractions=[0.0, 1.0])
    with pytest.raises(ValueError, match=r"^weight_scales\.fractions must not be empty"):
        weight_scales(model, 4, scale_method="accuracy", calibrate=lambda m: 1.0, fractions=[])
    with pytest.raises(ValueError, match=r"^SweepConfig\.accuracy_fractions must be .* got 2\.0"):
        SweepConfig(accuracy_fractions=[1.0, 2.0])
    with pytest.raises(ValueError, match="calibrate"):
        sweep(model, lambda m: 1.0, SweepConfig(scale_methods=["accuracy"]))
    with pytest.raises(ValueError, match="no entry"):
        with quantized_weights(model, 4, scales={"0.weight": 1.0}):
            pass


def test_sweep_with_accuracy_method_records_scale_ratio():
    model = _heavy_tailed_model()
    x = paddle.to_tensor(np.random.default_rng(5).normal(size=(128, 16)).astype("float32"))
    reference = model(x).argmax(-1).numpy()
    agreement = lambda m: float((m(x).argmax(-1).numpy() == reference).mean())
    config = SweepConfig(bits=[3], per_channel=[False], factors=[1.0], noise_stds=[], scale_methods=SCALE_METHODS)
    records = sweep(model, agreement, config, calibrate=agreement)
    ratios = {r.scale_method: r.scale_ratio for r in records}
    assert ratios["abs_max"] == 1.0 and ratios["mse"] < 1.0 and ratios["accuracy"] <= 1.0


# ---- pinned by mutation testing (tools/mutate.py) ------------------------------------------------

def test_quantize_array_hand_values_at_4_bits_and_scale_2():
    w = np.array([1.0, -3.0, 0.3, 0.0], dtype=np.float32)
    # qmax 7, step 2/7: 1.0 -> round(3.5) = 4 -> 8/7; -3.0 -> -10.5 clips to -7 -> -2; 0.3 -> round(1.05) = 1 -> 2/7
    np.testing.assert_allclose(quantize_array(w, 4, 2.0), [8 / 7, -2.0, 2 / 7, 0.0], rtol=1e-6)
    assert quantize_array(w, 4, 2.0).dtype == np.float32


def test_quantize_array_zero_scale_gives_zeros_without_warnings():
    w = np.array([[0.5, -1.0], [2.0, 0.25]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division by a zero scale happens
        np.testing.assert_array_equal(quantize_array(w, 4, 0.0), np.zeros_like(w))
        np.testing.assert_array_equal(quantize_array(w, 4, np.array([0.0, 2.0]), axis=0)[0], [0.0, 0.0])


@pytest.mark.parametrize("axis", [None, 1])
def test_mse_scale_is_the_best_of_100_fractions_from_0_2_to_1(axis):
    # an independent brute force: every fraction of abs-max, the first of the least error kept
    w = np.random.default_rng(6).laplace(size=(64, 3)).astype(np.float32)
    fractions = np.linspace(0.2, 1.0, 100)
    columns = [w] if axis is None else [w[:, [c]] for c in range(w.shape[1])]
    expected = []
    for col in columns:
        base = float(np.abs(col).max())
        errors = [((quantize_array(col, 4, base * f) - col).astype(np.float64) ** 2).sum() for f in fractions]
        expected.append(base * fractions[int(np.argmin(errors))])
    got = mse_scale(w, 4, axis)
    assert got.dtype == np.float64
    np.testing.assert_allclose(np.ravel(got), expected, rtol=1e-6)  # per channel, scales are float32 products


def test_channel_axis_of_linear_and_conv():
    assert channel_axis(paddle.nn.Linear(3, 4)) == 1 and channel_axis(paddle.nn.Conv2D(2, 5, 3)) == 0
    model = paddle.nn.Sequential(paddle.nn.Conv2D(2, 5, 3), paddle.nn.Flatten(), paddle.nn.Linear(5, 3))
    scales = weight_scales(model, 4, per_channel=True)
    assert scales["0.weight"].shape == (5,) and scales["2.weight"].shape == (3,)


def test_defaults_and_layer_types_of_scales_and_ratio():
    model = paddle.nn.Sequential(paddle.nn.Conv2D(1, 2, 3), paddle.nn.Flatten(), paddle.nn.Linear(2, 3))
    model[2].weight.set_value(np.array([[0.25, 0.0, 0.5], [0.1, 0.0, -0.5]], dtype="float32"))  # one zero channel
    defaults = weight_scales(model, 4)  # per tensor, abs-max
    assert defaults["2.weight"] == 0.5 and np.ndim(defaults["0.weight"]) == 0
    linear_only = weight_scales(model, 4, layer_types=(paddle.nn.Linear,))
    assert list(linear_only) == ["2.weight"]
    assert scale_ratio(model, {"2.weight": 0.25}, layer_types=(paddle.nn.Linear,)) == 0.5  # per tensor by default
    per_channel = {"2.weight": np.array([0.125, 0.0, 0.25])}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert scale_ratio(model, per_channel, True, layer_types=(paddle.nn.Linear,)) == 0.5  # 0/0 counts as 0
    calls = []
    weight_scales(model, 4, True, "accuracy", calibrate=lambda m: calls.append(1) or 1.0, fractions=[0.5, 1.0],
                  layer_types=(paddle.nn.Linear,))
    assert len(calls) == 2  # the conv weight is not searched


def test_accuracy_search_ties_keep_the_larger_fraction_per_channel():
    model = _heavy_tailed_model()
    abs_max = weight_scales(model, 3, True)
    seen = []

    def constant(m):
        seen.append(m[0].weight.numpy().copy())
        return 0.5  # every fraction ties

    chosen = weight_scales(model, 3, True, "accuracy", calibrate=constant, fractions=[0.5, 1.0, 0.75])
    for name in chosen:
        np.testing.assert_array_equal(chosen[name], abs_max[name])
    w = model[0].weight.numpy()
    np.testing.assert_array_equal(seen[0], quantize_array(w, 3, abs_max["0.weight"], axis=1))  # per channel, 1.0 first


def test_accuracy_fractions_up_to_1_5():
    SweepConfig(accuracy_fractions=[1.5])
    with pytest.raises(ValueError, match="fractions"):
        SweepConfig(accuracy_fractions=[1.51])


def test_scale_ratio_is_per_tensor_by_default():
    model = paddle.nn.Sequential(paddle.nn.Linear(2, 3))
    model[0].weight.set_value(np.array([[0.1, -0.2, 1.0], [0.05, 0.1, -0.5]], dtype="float32"))
    assert scale_ratio(model, {"0.weight": 0.1}) == pytest.approx(0.1)  # base 1.0
    assert scale_ratio(model, {"0.weight": 0.1}, True) == pytest.approx(0.5)  # median of 1, 0.5, 0.1


def test_accuracy_search_quantizes_conv_weights_per_output_channel():
    paddle.seed(3)
    model = paddle.nn.Sequential(paddle.nn.Conv2D(1, 3, 3))
    abs_max = weight_scales(model, 3, True)
    seen = []
    weight_scales(model, 3, True, "accuracy", calibrate=lambda m: seen.append(m[0].weight.numpy().copy()) or 1.0,
                  fractions=[1.0])
    np.testing.assert_array_equal(seen[0], quantize_array(model[0].weight.numpy(), 3, abs_max["0.weight"], axis=0))
