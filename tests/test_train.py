"""The training loop: exact updates, batch order, checkpoints and resume, callbacks,
activation kurtosis, evaluation, and the default CNN."""
import numpy as np
import paddle
import pytest
from scipy import stats

from paddle_kure import KurtosisDecay
from paddle_kure.models import SmallCNN
from paddle_kure.train import ActivationKurtosis, accuracy, batch_order, evaluate, fit, make_optimizer


def data(n=48, features=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, features)).astype("float32"), rng.integers(0, classes, n).astype("int64")


def softmax_ce_grads(x, y, w, b):
    logits = x @ w + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(y)), y] -= 1
    g = p / len(y)
    return x.T @ g, g.sum(0)


def kure_grad(w, target):
    """d/dw (K(w) - target)^2 from the closed form (population moments)."""
    x = w.astype(np.float64).ravel()
    d = x - x.mean()
    m2, m3, m4 = (d ** 2).mean(), (d ** 3).mean(), (d ** 4).mean()
    k = m4 / m2 ** 2
    dk = 4 / (x.size * m2 ** 2) * (d ** 3 - m3 - k * m2 * d)
    return (2 * (k - target) * dk).reshape(w.shape)


def test_batch_order_is_a_seeded_permutation_without_the_last_partial_batch():
    batches = batch_order(10, 3, seed=1, epoch=0)
    assert [len(b) for b in batches] == [3, 3, 3]
    assert len(set(np.concatenate(batches).tolist())) == 9
    assert all(np.array_equal(a, b) for a, b in zip(batches, batch_order(10, 3, seed=1, epoch=0)))
    assert not all(np.array_equal(a, b) for a, b in zip(batches, batch_order(10, 3, seed=1, epoch=1)))


def test_one_sgd_step_with_kurtosis_decay_matches_numpy():
    x, y = data()
    coeff, lr, target = 0.3, 0.5, 1.8
    model = paddle.nn.Linear(6, 3, weight_attr=paddle.ParamAttr(regularizer=KurtosisDecay(coeff, target)))
    w0, b0 = model.weight.numpy().astype(np.float64), model.bias.numpy().astype(np.float64)
    opt = paddle.optimizer.SGD(lr, parameters=model.parameters())
    history = fit(model, opt, x, y, epochs=1, batch_size=len(y), progress=False)
    gw, gb = softmax_ce_grads(x.astype(np.float64), y, w0, b0)
    np.testing.assert_allclose(model.weight.numpy(), w0 - lr * (gw + coeff * kure_grad(w0, target)), atol=2e-6)
    np.testing.assert_allclose(model.bias.numpy(), b0 - lr * gb, atol=2e-6)
    logits = x @ w0 + b0
    expected_loss = np.mean(np.log(np.exp(logits).sum(1)) - logits[np.arange(len(y)), y])
    assert history == [{"epoch": 1, "loss": pytest.approx(expected_loss, rel=1e-5)}]


class Counter:
    """A stateful per-step callback, as a pruner is."""

    def __init__(self):
        self.steps = []

    def __call__(self, step, loss):
        assert np.isfinite(loss)
        self.steps.append(step)

    def state_dict(self):
        return {"steps": list(self.steps)}

    def set_state_dict(self, state):
        self.steps = list(state["steps"])


def run_fit(checkpoint_dir, epochs, resume):
    paddle.seed(7)
    x, y = data(n=40)
    model = paddle.nn.Sequential(paddle.nn.Linear(6, 8), paddle.nn.ReLU(),
                                 paddle.nn.Linear(8, 3, weight_attr=paddle.ParamAttr(regularizer=KurtosisDecay(0.1))))
    opt = make_optimizer("adam", 0.01, model.parameters(), weight_decay=1e-3)
    counter, epochs_seen = Counter(), []
    history = fit(model, opt, x, y, epochs=epochs, batch_size=8, seed=5, step_callbacks=[counter],
                  epoch_callbacks=[epochs_seen.append], stateful=[counter], checkpoint_dir=checkpoint_dir,
                  resume=resume, progress=False)
    return model, history, counter, epochs_seen


def test_resume_after_an_interruption_reaches_the_uninterrupted_result(tmp_path):
    straight, history, counter, _ = run_fit(str(tmp_path / "a"), 3, resume=False)
    assert counter.steps == list(range(1, 16))  # 40 // 8 = 5 steps per epoch
    run_fit(str(tmp_path / "b"), 1, resume=False)  # "interrupted" after epoch 1
    resumed, resumed_history, resumed_counter, epochs_seen = run_fit(str(tmp_path / "b"), 3, resume=True)
    assert epochs_seen == [1, 2]
    assert resumed_counter.steps == counter.steps
    assert resumed_history == history
    for a, b in zip(straight.parameters(), resumed.parameters()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # a finished checkpoint: nothing left to train
    _, again, _, epochs_seen = run_fit(str(tmp_path / "b"), 3, resume=True)
    assert epochs_seen == [] and again == history


def test_activation_kurtosis_matches_scipy_and_adds_to_the_loss():
    model = paddle.nn.Sequential(paddle.nn.Linear(6, 16), paddle.nn.ReLU(), paddle.nn.Linear(16, 3))
    term = ActivationKurtosis(model, ["0", "2"], coeff=0.25, target=1.8)
    x = paddle.to_tensor(data()[0])
    hidden = model[0](x).numpy()
    out = model(x)
    expected = 0.25 * np.mean([(stats.kurtosis(a.ravel(), fisher=False) - 1.8) ** 2
                               for a in (hidden, out.numpy())])
    np.testing.assert_allclose(float(term.loss()), expected, rtol=1e-4)
    with pytest.raises(RuntimeError, match="no training forward"):
        term.loss()
    model.eval()
    model(x)  # eval passes are not regularized
    with pytest.raises(RuntimeError):
        term.loss()
    term.remove()
    with pytest.raises(ValueError, match="no sublayers named"):
        ActivationKurtosis(model, ["fc9"], coeff=1.0)


def test_fit_with_extra_loss_differs_from_plain_fit():
    results = []
    for coeff in (0.0, 1.0):
        paddle.seed(3)
        x, y = data()
        model = paddle.nn.Sequential(paddle.nn.Linear(6, 16), paddle.nn.ReLU(), paddle.nn.Linear(16, 3))
        term = ActivationKurtosis(model, ["0"], coeff=coeff)
        opt = paddle.optimizer.SGD(0.1, parameters=model.parameters())
        fit(model, opt, x, y, epochs=2, batch_size=16, extra_loss=term.loss, progress=False)
        results.append(model[0].weight.numpy())
    assert not np.allclose(results[0], results[1])


def test_evaluate_and_accuracy():
    model = paddle.nn.Linear(2, 2)
    model.weight.set_value(np.eye(2, dtype="float32"))
    model.bias.set_value(np.zeros(2, dtype="float32"))
    x = np.array([[1, 0], [0, 1], [2, 3], [5, 1]], dtype="float32")
    assert evaluate(model, x, np.array([0, 1, 0, 0]), batch_size=3) == 0.75
    assert model.training
    assert accuracy(np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([1, 1])) == 0.5
    with pytest.raises(ValueError, match="predictions"):
        accuracy(np.array([1, 2, 3]), np.array([1, 2]))


class DictInput(paddle.nn.Layer):
    """A model called with keyword arguments, as a BERT classifier is."""

    def __init__(self):
        super().__init__()
        self.fc = paddle.nn.Linear(6, 3)

    def forward(self, features, scale):
        return self.fc(features * scale)


def test_batch_iterator_hooks_and_selection_of_the_best_validated_epoch():
    """A batch iterator (dict inputs), an epoch-begin hook, per-epoch validation and the
    weights of the best selectable epoch restored; each checked against a replay by hand."""
    x, y = data(n=24)
    val_x, val_y = data(n=30, seed=1)

    def batches(epoch):  # two batches per epoch, a different split each epoch
        order = np.random.default_rng(epoch).permutation(len(y))
        return [({"features": x[i], "scale": np.ones((len(i), 1), "float32")}, y[i]) for i in (order[:12], order[12:])]

    def validate(model):
        return evaluate(model, batches=[({"features": val_x, "scale": np.ones((30, 1), "float32")}, val_y)])

    paddle.seed(2)
    model = DictInput()
    initial = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    opt = paddle.optimizer.SGD(0.5, parameters=model.parameters())
    begun, snapshots = [], []
    history = fit(model, opt, None, None, 4, 12, progress=False, batches=batches,
                  epoch_begin_callbacks=[begun.append],
                  epoch_callbacks=[lambda epoch: snapshots.append(model.fc.weight.numpy().copy())],
                  validate=validate, select_best=lambda epoch: epoch >= 1)
    assert begun == [0, 1, 2, 3] and model.training
    # replay the same updates by hand: plain SGD on softmax cross-entropy
    w, b = initial["fc.weight"].astype(np.float64), initial["fc.bias"].astype(np.float64)
    accuracies = []
    for epoch in range(4):
        for inputs, labels in batches(epoch):
            gw, gb = softmax_ce_grads(inputs["features"].astype(np.float64), labels, w, b)
            w, b = w - 0.5 * gw, b - 0.5 * gb
        np.testing.assert_allclose(snapshots[epoch], w, atol=1e-5)
        accuracies.append(accuracy(val_x @ w + b, val_y))
    assert [h["val_acc"] for h in history] == pytest.approx(accuracies)
    best = 1 + int(np.argmax(accuracies[1:]))  # epoch 0 is not selectable
    assert [h.get("selected", False) for h in history] == [i == best for i in range(4)]
    np.testing.assert_allclose(model.fc.weight.numpy(), snapshots[best], atol=1e-6)


def test_fit_rejects_bad_arguments():
    x, y = data(n=10)
    model = paddle.nn.Linear(6, 3)
    opt = paddle.optimizer.SGD(0.1, parameters=model.parameters())
    with pytest.raises(ValueError, match="exceeds the 10"):
        fit(model, opt, x, y, epochs=1, batch_size=16, progress=False)
    with pytest.raises(ValueError, match="labels"):
        fit(model, opt, x, y[:5], epochs=1, batch_size=4, progress=False)
    with pytest.raises(ValueError, match="adam"):
        make_optimizer("adamw", 0.1, model.parameters())
    with pytest.raises(ValueError, match="select_best needs validate"):
        fit(model, opt, x, y, epochs=1, batch_size=4, progress=False, select_best=True)
    with pytest.raises(ValueError, match="images and labels are needed without batches"):
        fit(model, opt, None, None, epochs=1, batch_size=4, progress=False)


def test_small_cnn_shapes_and_parameter_count():
    model = SmallCNN()
    assert model(paddle.zeros([3, 1, 28, 28])).shape == [3, 10]
    # conv1 1*16*9+16, conv2 16*32*9+32, fc1 32*7*7*128+128, fc2 128*10+10
    assert sum(int(np.prod(p.shape)) for p in model.parameters()) == 160 + 4640 + 200832 + 1290
    assert [n for n, p in model.named_parameters() if len(p.shape) >= 2] == \
        ["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"]
    with pytest.raises(ValueError, match="multiple of 4"):
        SmallCNN(image_size=30)
