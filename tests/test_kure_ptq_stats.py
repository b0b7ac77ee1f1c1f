"""The paired statistics of experiments/kure_ptq.py against scipy."""
import numpy as np
import pytest
from script_module import load_script
from scipy import stats


@pytest.fixture(scope="module")
def kure_ptq():
    return load_script("experiments/kure_ptq.py")


def test_paired_summary_matches_scipy_t_interval(kure_ptq):
    differences = np.random.default_rng(3).normal(0.01, 0.02, size=6)
    summary = kure_ptq.paired_summary(differences)
    expected = stats.t.interval(0.95, len(differences) - 1, loc=differences.mean(), scale=stats.sem(differences))
    assert summary["mean"] == pytest.approx(differences.mean())
    assert summary["ci95"] == pytest.approx(list(expected), rel=1e-12)
    assert summary["per_seed"] == pytest.approx(differences.tolist())


def test_paired_summary_refuses_a_single_seed(kure_ptq):
    with pytest.raises(ValueError, match="2 or more"):
        kure_ptq.paired_summary([0.01])


def _record(seed, arm, float_acc, w3_acc):
    cells = [{"bits": 3, "per_channel": False, "step": "abs_max", "ratio": r, "ends": 8, "test_acc": w3_acc}
             for r in (0.7, 1.0)]
    return {"seed": seed, "arm": arm, "test_acc": float_acc, "weight_ptq": cells}


def test_paired_marks_cells_where_fp32_loses_under_one_point(kure_ptq):
    value = lambda r: kure_ptq._cell(r, 3, False, "abs_max", 1.0)  # noqa: E731
    hurt = [_record(s, "fp32", 0.86, 0.80 + s / 100) for s in range(3)] + \
           [_record(s, "kure", 0.86, 0.83 + s / 100) for s in range(3)]
    summary = kure_ptq.paired(hurt, value)
    assert summary["mean"] == pytest.approx(0.03)
    assert summary["fp32_loss"] == pytest.approx(0.05)
    assert summary["informative"]
    mild = [_record(s, "fp32", 0.86, 0.855) for s in range(2)] + [_record(s, "kure", 0.86, 0.856) for s in range(2)]
    assert not kure_ptq.paired(mild, value)["informative"]
