"""tools/demo_results.py: the README's demo numbers come from a run's results.json."""
import json

import pytest
from script_module import load_script


@pytest.fixture(scope="module")
def demo_results():
    return load_script("tools/demo_results.py")


RESULTS = {
    "config": {"Global": {"seed": 7, "train_size": 100, "val_size": 50, "test_size": 0},
               "TrainConfig": {"epochs": 1, "optimizer": "adam", "learning_rate": 0.001, "batch_size": 10,
                               "weight_decay": 0.0, "qat_epochs": 1, "qat_learning_rate": 0.0002},
               "QuantPost": {"algo": "avg", "batch_nums": 2, "batch_size": 8},
               "Kurtosis": {"coeff": 1.0, "target": 1.8, "exclude": ["conv1.*"]}},
    "results": [
        {"method": "fp32", "precision": "FP32", "test_acc": 0.8, "val_acc": 0.81, "weight_kurtosis": {"fc.weight": 3.0}},
        {"method": "qat", "precision": "W4A4", "test_acc": 0.7512, "val_acc": 0.76,
         "weight_kurtosis": {"fc._layer.weight": 2.5}},
    ],
}


def test_tables_hold_the_run_numbers(demo_results, tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(RESULTS))
    out = tmp_path / "demo.md"
    assert demo_results.main([str(path), str(out)]) == 0
    text = out.read_text()
    assert "| fp32 | 80.00 (81.00) |" in text
    assert "| qat | 75.12 (76.00) |" in text
    assert "| qat W4A4 | 2.50 |" in text  # QAT's wrapped layer name maps to the float one
    assert "seed 7" in text and "'avg'" in text


def test_refuses_a_file_that_is_not_a_run(demo_results):
    with pytest.raises(ValueError, match="not a paddle-kure run results.json"):
        demo_results.demo_markdown({"results": []}, "x.json")
