"""paddle_kure.outliers, paddle_kure.io and the kurtosis report: outlier rules, kurtosis values, loaders,
report files, ``paddle-kure analyze``."""
import csv
import os

import numpy as np
import paddle
import pytest
from scipy import stats

from kurtosis_reference import KURTOSES_NEAR_LOG_MAD_DEFAULT, log_mad_z_scores

from paddle_kure.apps.report import KurtosisReport
from paddle_kure.io import load_named_arrays
from paddle_kure.outliers import outliers_log_mad, outliers_mean_std, tensor_kurtosis
from paddle_kure.cli import main as cli_main

PNG_MAGIC = b"\x89PNG"


# ---------------------------------------------------------------- rules
def test_mean_std_rule_matches_numpy():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.uniform(2.5, 4.5, 30), [60.0, 1.2]])
    expected = np.abs(values - values.mean()) > 3 * values.std()
    np.testing.assert_array_equal(outliers_mean_std(values), expected)
    assert outliers_mean_std(values).nonzero()[0].tolist() == [30]
    np.testing.assert_array_equal(outliers_mean_std(values, num_std=1.0),
                                  np.abs(values - values.mean()) > values.std())


def test_mean_std_rule_limits():
    # n values: no z-score above sqrt(n - 1): with 10 values 3 std flags nothing, however extreme
    assert not outliers_mean_std([3.0] * 9 + [1e6]).any()
    assert outliers_mean_std([3.0] * 10 + [1e6]).tolist() == [False] * 10 + [True]
    # three large outliers among twenty inflate the std and hide each other
    masked = [3.0, 3.1, 2.9, 3.2, 3.0, 2.8, 3.3, 3.1, 3.0, 2.9, 3.2, 3.0, 3.1, 2.9, 3.0, 3.1, 3.0, 900.0, 950.0, 1000.0]
    assert not outliers_mean_std(masked).any()
    assert outliers_log_mad(masked).nonzero()[0].tolist() == [17, 18, 19]


def test_log_mad_rule_matches_numpy():
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.lognormal(np.log(4.0), 0.15, 40), [9.0, 20.0, 1500.0, 1.5]])
    logs = np.log10(values)
    median = np.median(logs)
    mad = 1.4826 * np.median(np.abs(logs - median))
    for k in (3.5, 2.0, 6.0):
        np.testing.assert_array_equal(outliers_log_mad(values, k=k, min_ratio=1.0), logs > median + k * mad)
        np.testing.assert_array_equal(outliers_log_mad(values, k=k),
                                      (logs > median + k * mad) & (values > 2.0 * 10 ** median))
    flags = outliers_log_mad(values)
    assert flags[41] and flags[42] and not flags[43]  # only high values are outliers


def test_log_mad_default_threshold_is_3_5_robust_std():
    values = KURTOSES_NEAR_LOG_MAD_DEFAULT
    z = log_mad_z_scores(values)
    assert 3.0 < z[-2] < 3.5 < z[-1] < 5.0  # the case where the default, and only it, decides
    assert outliers_log_mad(values).nonzero()[0].tolist() == [len(values) - 1]
    np.testing.assert_array_equal(outliers_log_mad(values), outliers_log_mad(values, k=3.5))


def test_log_mad_min_ratio_guards_a_tiny_mad():
    values = [2.30, 2.33, 2.35, 2.36, 2.38, 2.40, 2.41, 2.45, 3.6]  # few, alike: the MAD is tiny
    assert outliers_log_mad(values, min_ratio=1.0).tolist()[-1]  # 3.6 is ~20 MADs above the median
    assert not outliers_log_mad(values).any()  # but only 1.5 times the median
    assert outliers_log_mad(values + [60.0]).nonzero()[0].tolist() == [9]


def test_rules_skip_undefined_values():
    values = [3.0, 3.1, 2.9, 3.2, 3.0, 2.8, 3.3, 3.1, 3.0, 2.9, 3.2, 400.0]
    with_undefined = values + [0.0, float("nan"), float("inf")]
    for rule in (outliers_mean_std, outliers_log_mad):
        flags = rule(with_undefined)
        np.testing.assert_array_equal(flags[:-3], rule(values))  # same statistics without them
        assert not flags[-3:].any() and flags[11]
        assert rule([]).tolist() == [] and rule([5.0]).tolist() == [False]


def test_rules_count_every_value_above_zero_and_return_bools():
    # ten zeros (constant tensors) are undefined: 5.0 is then alone and no outlier;
    # ten ones (two-valued tensors, the lowest kurtosis there is) are defined: 30.0 is
    for rule in (outliers_mean_std, outliers_log_mad):
        assert rule([0.0] * 10 + [5.0]).tolist() == [False] * 11
        assert rule([1.0] * 10 + [30.0]).tolist() == [False] * 10 + [True]
        assert rule([1.0, 3.0]).dtype == bool


def test_rules_work_from_two_values():
    assert outliers_mean_std([1.0, 3.0], num_std=0.5).tolist() == [True, True]  # both 1 std from the mean
    # logs 0.48 and 2.48: median 1.48, MAD 1.48 (normalized): 0.5 MADs above is 2.22
    assert outliers_log_mad([3.0, 300.0], k=0.5).tolist() == [False, True]


def test_log_mad_flags_strictly_more_than_min_ratio_times_the_median():
    # MAD 0: the threshold is exactly 2 x the median
    assert outliers_log_mad([1.0] * 10 + [2.0, 2.01]).tolist() == [False] * 11 + [True]


@pytest.mark.parametrize("call, error, words", [
    (lambda: outliers_mean_std([1.0, 2.0], num_std=0), ValueError,
     "outliers_mean_std.num_std must be a finite number > 0, got 0"),
    (lambda: outliers_mean_std([1.0, 2.0], num_std=True), TypeError,
     "outliers_mean_std.num_std must be a finite number > 0, got True"),
    (lambda: outliers_log_mad([1.0, 2.0], k=True), TypeError,
     "outliers_log_mad.k must be a finite number > 0, got True"),
    (lambda: outliers_log_mad([1.0, 2.0], k=0), ValueError, "outliers_log_mad.k must be a finite number > 0, got 0"),
    (lambda: outliers_log_mad([1.0, 2.0], min_ratio=0.5), ValueError,
     "outliers_log_mad.min_ratio must be a finite number >= 1"),
    (lambda: outliers_log_mad([1.0, 2.0], min_ratio=True), TypeError,
     "outliers_log_mad.min_ratio must be a finite number >= 1"),
])
def test_rules_reject_bad_arguments(call, error, words):
    with pytest.raises(error, match=words):
        call()


def test_rules_reject_a_table_of_values():
    with pytest.raises(ValueError, match="1-D"):
        outliers_log_mad([[1.0, 2.0]])


# ---------------------------------------------------------------- kurtosis
@pytest.mark.parametrize("make", [
    lambda rng: rng.standard_normal((64, 32)).astype("float32"),
    lambda rng: rng.uniform(-1, 1, (3, 5, 7)),
    lambda rng: rng.laplace(size=5000).astype("float32"),
    lambda rng: (1e4 + rng.standard_normal(4096)).astype("float32"),  # large mean
    lambda rng: rng.integers(-128, 127, (40, 40)).astype("int8"),
])
def test_tensor_kurtosis_matches_scipy(make):
    x = make(np.random.default_rng(2))
    expected = stats.kurtosis(x.astype(np.float64).ravel(), fisher=False)
    assert tensor_kurtosis(x) == pytest.approx(expected, rel=1e-9)


def test_tensor_kurtosis_constant_and_empty():
    assert tensor_kurtosis(np.full((4, 4), 0.5)) == 0.0
    with pytest.raises(ValueError, match="empty"):
        tensor_kurtosis(np.zeros((0, 3)))


# ---------------------------------------------------------------- report
class TinyNet(paddle.nn.Layer):
    """Twelve small linears; ``heavy`` gets a heavy-tailed weight."""

    def __init__(self):
        super().__init__()
        self.body = paddle.nn.LayerList([paddle.nn.Linear(16, 16) for _ in range(11)])
        self.heavy = paddle.nn.Linear(16, 16)
        rng = np.random.default_rng(3)
        w = rng.standard_normal((16, 16)) * 0.01
        w[0, 0], w[5, 9] = 2.0, -1.5
        self.heavy.weight.set_value(w.astype("float32"))

    def forward(self, x):
        for layer in self.body:
            x = paddle.nn.functional.relu(layer(x))
        return self.heavy(x)


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    paddle.disable_static()
    model = TinyNet()
    paddle.save(model.state_dict(), str(root / "tiny.pdparams"))
    spec = [paddle.static.InputSpec([None, 16], "float32", "x")]
    paddle.jit.save(model, str(root / "pir" / "tiny"), input_spec=spec)  # PIR: tiny.json
    with paddle.pir_utils.OldIrGuard():
        paddle.jit.save(model, str(root / "legacy" / "tiny"), input_spec=spec)  # tiny.pdmodel
    weights = {name: p.numpy() for name, p in model.named_parameters()}
    return root, weights


def check_report_files(out, expected_weights, heavy_name):
    names = sorted(os.listdir(out))
    assert names == ["histograms_01.png", "kurtosis.csv", "kurtosis.md", "kurtosis_log10.png"]
    for png in ("histograms_01.png", "kurtosis_log10.png"):
        with open(out / png, "rb") as f:
            assert f.read(4) == PNG_MAGIC
    with open(out / "kurtosis.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == list(expected_weights)
    for r in rows:
        w = expected_weights[r["name"]]
        assert r["shape"] == "x".join(map(str, w.shape)) and int(r["size"]) == w.size
        assert float(r["kurtosis"]) == pytest.approx(stats.kurtosis(w.astype(np.float64).ravel(), fisher=False),
                                                     rel=1e-6)
        assert r["layer"] == r["name"].rsplit(".", 1)[0]
        is_heavy = r["name"] == heavy_name
        assert r["outlier_mean_std"] == r["outlier_log_mad"] == str(int(is_heavy))
    md = (out / "kurtosis.md").read_text()
    assert f"`{heavy_name}`" in md and "flags 1" in md and "![log10 kurtosis per tensor](kurtosis_log10.png)" in md


def test_report_on_pdparams(saved_models, tmp_path):
    root, weights = saved_models
    two_d = {n: w for n, w in weights.items() if w.ndim >= 2}
    assert cli_main(["analyze", str(root / "tiny.pdparams"), "--output", str(tmp_path / "out")]) == 0
    check_report_files(tmp_path / "out", two_d, "heavy.weight")


@pytest.mark.parametrize("form", ["pir/tiny", "pir/tiny.json", "legacy/tiny.pdmodel", "legacy/tiny.pdiparams",
                                  "legacy"])
def test_report_on_inference_model(saved_models, tmp_path, form):
    root, weights = saved_models
    arrays, source = load_named_arrays(str(root / form))
    assert source == "tiny" and paddle.in_dynamic_mode()
    # inference models name tensors by variable (linear_N.w_0), in program order
    assert [a.shape for a in arrays.values()] == [w.shape for w in weights.values()]
    for got, expected in zip(arrays.values(), weights.values()):
        np.testing.assert_array_equal(got, expected)
    if form == "pir/tiny":
        out = tmp_path / "out"
        assert cli_main(["analyze", str(root / form), "--output", str(out)]) == 0
        heavy = [n for n in arrays if n.endswith(".w_0")][-1]
        check_report_files(out, {n: a for n, a in arrays.items() if a.ndim >= 2}, heavy)


def test_a_single_weight_tensor_is_summarized(tmp_path, capsys):
    weight = np.random.default_rng(0).normal(size=(6, 5)).astype("float32")
    paddle.save({"only.weight": paddle.to_tensor(weight), "only.bias": paddle.zeros([5])}, str(tmp_path / "one.pdparams"))
    assert cli_main(["analyze", str(tmp_path / "one.pdparams"), "--output", str(tmp_path / "o")]) == 0
    md = (tmp_path / "o" / "kurtosis.md").read_text()
    assert "needs 2 or more tensors" in md and f"{stats.kurtosis(weight.ravel(), fisher=False):.4g}" in md


def test_report_options_and_layer(tmp_path):
    model = TinyNet()
    report = KurtosisReport.from_model(model, all_tensors=True)
    assert len(report.rows) == 24 and report.source == "TinyNet"
    assert report.rows[1].name == "body.0.bias" and report.rows[1].kurtosis == 0.0  # zero bias: undefined
    assert not report.rows[1].outlier_log_mad and not report.rows[1].outlier_mean_std
    paths = report.write(str(tmp_path / "all"), max_histograms=21)
    assert sorted(os.path.basename(p) for p in paths) == ["histograms_01.png", "histograms_02.png",
                                                          "kurtosis.csv", "kurtosis.md", "kurtosis_log10.png"]
    assert report.write(str(tmp_path / "all"), max_histograms=0)[-1].endswith("kurtosis_log10.png")
    assert not any(n.startswith("histograms") for n in os.listdir(tmp_path / "all"))  # old pages removed
    assert "heavy.weight" in report.summary() and "naive KURE loss" in report.summary()


def test_cli_errors_are_one_line(tmp_path, capsys):
    def error_of(*argv):
        assert cli_main(["analyze", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("paddle-kure: error: ") and err.count("\n") == 1, err
        return err

    assert "does not exist" in error_of(str(tmp_path / "nothing.pdparams"))
    assert "does not exist" in error_of(str(tmp_path / "nothing"))
    (tmp_path / "notes.txt").write_text("hi")
    assert "is not a model paddle-kure analyze reads" in error_of(str(tmp_path / "notes.txt"))
    paddle.save({"step": 3}, str(tmp_path / "empty.pdparams"))
    assert "holds no tensor" in error_of(str(tmp_path / "empty.pdparams"))
    paddle.save({"bias": paddle.zeros([4])}, str(tmp_path / "bias.pdparams"))
    assert "has no tensor to analyze" in error_of(str(tmp_path / "bias.pdparams"), "--output", str(tmp_path / "o"))
    with pytest.raises(TypeError, match="expected a path"):
        load_named_arrays(None)
