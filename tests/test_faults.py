"""Faults a user meets, injected into real ``paddle-kure`` processes: a kill during a
checkpoint write, a resume after a config change, two runs into one folder, damaged
checkpoints, records and data files, a diverging loss, and bad input. Each test
checks that nothing finished is lost and that the message names the problem."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import paddle
import pytest
import yaml

import paddle_kure
from paddle_kure import KurtosisDecay
from paddle_kure.cli import main as cli_main
from paddle_kure.apps.run_config import ConfigError, config_from_dict
from paddle_kure.errors import UserError
from paddle_kure.runio import OutputLock, atomic_write, set_state_strictly
from paddle_kure.train import fit

DATA = "/usr/share/datasets/fashion-mnist"
SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(paddle_kure.__file__)))
# two FP32 epochs: a checkpoint is written while an earlier one exists
TINY = {
    "Global": {"seed": 11, "train_size": 256, "val_size": 200, "test_size": 300},
    "TrainConfig": {"epochs": 2, "qat_epochs": 1, "batch_size": 64},
    "QuantAware": {"weight_bits": 8, "activation_bits": 8, "use_pact": False},
    "QuantPost": {"batch_nums": 2, "batch_size": 32},
}
STAGES = ["fp32", "fp32_more", "fp32_kure", "ptq_w8a8", "ptq_kure_w8a8", "qat_w8a8", "qat_kure_w8a8"]

# Runs the command with atomic_write wrapped: the NTH write of a file named TARGET
# writes half its bytes, fsyncs them and SIGKILLs the process (a kill mid-write).
KILLING_DRIVER = """
import contextlib, os, signal, sys
import paddle_kure.runio as runio

real_write, (target, nth), seen = runio.atomic_write, (sys.argv[1], int(sys.argv[2])), []

class Torn:
    def __init__(self, f):
        self.f = f
    def write(self, data):
        self.f.write(data[:len(data) // 2]); self.f.flush(); os.fsync(self.f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)

@contextlib.contextmanager
def killing_write(path, mode="w", **kwargs):
    with real_write(path, mode, **kwargs) as f:
        if os.path.basename(path) == target:
            seen.append(path)
        yield Torn(f) if os.path.basename(path) == target and len(seen) == nth else f

runio.atomic_write = killing_write
from paddle_kure.cli import main
sys.exit(main(sys.argv[3:]))
"""

pytestmark = pytest.mark.skipif(not os.path.isfile(os.path.join(DATA, "t10k-labels-idx1-ubyte.gz")),
                                reason="needs the Fashion-MNIST files (make data)")


def env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [SOURCE_ROOT, os.environ.get("PYTHONPATH")])))


def command(*args):
    return [sys.executable, "-m", "paddle_kure.cli", *args]


def paddle_kure_run(config, out, *extra, driver=()):
    """``paddle-kure run CONFIG --output-dir OUT`` in a new process (through KILLING_DRIVER
    with ``driver = (TARGET, NTH)``)."""
    head = [sys.executable, "-c", KILLING_DRIVER, *driver] if driver else command()
    argv = ["run", str(config), "--output-dir", str(out), "--no-progress", *extra]
    return subprocess.run(head + argv, capture_output=True, text=True, env=env(), timeout=300)


def run_here(config, out, *extra):
    """``paddle-kure run`` in this process (no Paddle start-up): its exit status."""
    return cli_main(["run", str(config), "--output-dir", str(out), "--no-progress", *extra])


def write_config(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def results(out):
    with open(out / "results.json") as f:
        return {r["stage"]: r for r in json.load(f)["results"]}


def outcome(records):
    """What a stage produced, without its timing."""
    return {stage: {k: v for k, v in r.items() if k != "seconds"} for stage, r in records.items()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run: the numbers every faulted run must reproduce."""
    root = tmp_path_factory.mktemp("faults")
    config = write_config(root / "tiny.yaml", TINY)
    out = root / "reference"
    assert run_here(config, out) == 0
    assert list(results(out)) == STAGES
    return config, out


def copy_run(reference, tmp_path):
    config, out = reference
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    return config, copy


def test_kill_during_a_checkpoint_write_loses_nothing_and_resume_matches(reference, tmp_path, capsys):
    config, ref = reference
    out = tmp_path / "out"
    # second model.pdparams written: FP32's epoch-2 checkpoint (epoch 1's is complete)
    killed = paddle_kure_run(config, out, driver=["model.pdparams", "2"])
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    state = json.loads((out / "checkpoints" / "fp32" / "state.json").read_text())
    assert state["epochs_done"] == 1  # the finished epoch survived the torn write
    assert any(name.startswith(".model.pdparams.tmp") for name in os.listdir(out / "checkpoints" / "fp32.partial"))
    assert run_here(config, out, "--resume") == 0
    assert f"took over the lock of PID" in capsys.readouterr().out  # the killed run could not release it
    assert outcome(results(out)) == outcome(results(ref))  # the same numbers as the uninterrupted run


def test_damaged_checkpoint_record_and_export_are_named_and_redone(reference, tmp_path, capsys):
    config, out = copy_run(reference, tmp_path)
    before = results(out)
    checkpoint = out / "checkpoints" / "fp32" / "model.pdparams"
    data = bytearray(checkpoint.read_bytes())
    data[len(data) // 2] ^= 0xFF
    checkpoint.write_bytes(bytes(data))
    os.remove(out / "stages" / "fp32.json")  # as if killed before the record: fp32 resumes from its checkpoint
    record = out / "stages" / "ptq_w8a8.json"
    record.write_text(record.read_text()[:40])  # torn JSON
    export = out / "export" / "qat_w8a8.pdiparams"
    export.write_bytes(export.read_bytes()[:-16])
    capsys.readouterr()
    assert run_here(config, out, "--resume") == 0
    done = capsys.readouterr()
    assert f"{checkpoint}: missing or does not match the checksum" in done.err
    assert "using the checkpoint of epoch 1" in done.err  # the previous checkpoint, not the start
    assert f"{record}: unreadable" in done.out
    assert f"{export}: does not match the checksum recorded in" in done.out
    assert "qat_kure_w8a8: finished in an earlier run, skipped" in done.out
    assert outcome(results(out)) == outcome(before)


def test_resume_after_a_config_change_is_refused_naming_the_keys(reference, tmp_path, capsys):
    _, out = copy_run(reference, tmp_path)
    kept = {name: (out / name).read_bytes() for name in ("results.json", "config_used.yaml", "results.md")}
    changed = dict(TINY, Global=dict(TINY["Global"], seed=99, train_size=320),
                   TrainConfig=dict(TINY["TrainConfig"], epochs=3))
    capsys.readouterr()
    assert run_here(write_config(tmp_path / "changed.yaml", changed), out, "--resume") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"paddle-kure: error: {out / 'stages' / 'fp32.json'}: cannot resume: the config changed: ")
    for change in ("Global.seed: 11 then, 99 now", "Global.train_size: 256 then, 320 now",
                   "TrainConfig.epochs: 2 then, 3 now"):
        assert change in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert {name: (out / name).read_bytes() for name in kept} == kept  # nothing of the finished run touched
    # a key that no stage depends on changes nothing
    assert run_here(write_config(tmp_path / "eval.yaml", dict(TINY, TrainConfig=dict(
        TINY["TrainConfig"], eval_batch_size=500))), out, "--resume") == 0
    out_text = capsys.readouterr().out
    assert all(f"{stage}: finished in an earlier run, skipped" in out_text for stage in STAGES)


def test_resume_of_a_folder_without_fingerprints_is_refused(reference, tmp_path, capsys):
    config, out = copy_run(reference, tmp_path)
    # the files an older paddle-kure wrote: bare stage records, checkpoint states without fingerprint or checksums
    for record in (out / "stages").glob("*.json"):
        record.write_text(json.dumps(json.loads(record.read_text())["record"]))
    for state in (out / "checkpoints").glob("*/state.json"):
        old = json.loads(state.read_text())
        state.write_text(json.dumps({"epochs_done": old["epochs_done"], "history": old["history"]}))
    capsys.readouterr()
    assert run_here(config, out, "--resume") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"paddle-kure: error: {out / 'checkpoints'}") and err.count("\n") == 1, err
    assert "cannot resume: it was written without a fingerprint of its config (an older paddle-kure)" in err


def test_a_run_without_resume_removes_the_earlier_stages(reference, tmp_path):
    from paddle_kure.apps.runguard import clear_earlier_run

    _, out = copy_run(reference, tmp_path)
    removed = clear_earlier_run(str(out))
    assert removed == sorted(str(out / "stages" / f"{stage}.json") for stage in STAGES) + [str(out / "checkpoints")]
    assert not list((out / "stages").iterdir()) and not (out / "checkpoints").exists()
    assert (out / "results.json").exists() and (out / "fp32.pdparams").exists()  # overwritten by the new run
    assert clear_earlier_run(str(out)) == []


def wait_for_lock(out, pid, process):
    lock = out / ".lock"
    for _ in range(600):
        if lock.exists() and lock.read_text().split()[:1] == [str(pid)]:
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.1)
    raise AssertionError("the run never took the lock")


def test_a_second_run_into_the_same_folder_is_refused(reference, tmp_path, capsys):
    config, ref = reference
    out = tmp_path / "out"
    first = subprocess.Popen(command("run", str(config), "--output-dir", str(out), "--no-progress"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    try:
        wait_for_lock(out, first.pid, first)
        assert run_here(config, out) == 2
        assert capsys.readouterr().err == (
            f"paddle-kure: error: {out}: in use by another paddle-kure run (PID {first.pid}, "
            f"lock {out / '.lock'}); wait for it to finish or choose another --output-dir\n")
        _, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err
    assert outcome(results(out)) == outcome(results(ref))  # the first run's files are its own


def test_a_killed_runs_lock_is_taken_over(reference, tmp_path, capsys):
    config, ref = reference
    out = tmp_path / "out"
    killed = subprocess.Popen(command("run", str(config), "--output-dir", str(out), "--no-progress"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env())
    wait_for_lock(out, killed.pid, killed)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert run_here(config, out, "--resume") == 0
    assert f"{out}: took over the lock of PID {killed.pid}, which is no longer running" in capsys.readouterr().out
    assert outcome(results(out)) == outcome(results(ref))
    assert (out / ".lock").read_text() == ""  # released


def test_lock_in_one_process(tmp_path):
    folder = str(tmp_path / "out")
    with OutputLock(folder) as lock:
        assert lock.took_over_from is None
        with pytest.raises(UserError, match=f"in use by another paddle-kure run \\(PID {os.getpid()},"):
            OutputLock(folder).acquire()  # flock is per open file: refused even in one process
    with OutputLock(folder) as lock:  # released cleanly: nothing to take over
        assert lock.took_over_from is None


def test_divergence_is_recorded_with_stage_epoch_and_step(tmp_path, capsys):
    config = write_config(tmp_path / "diverge.yaml", dict(TINY, TrainConfig=dict(
        TINY["TrainConfig"], epochs=1, qat_learning_rate=1e30)))
    out = tmp_path / "out"
    assert run_here(config, out) == 1
    log = capsys.readouterr().out
    records = results(out)
    for stage in ("fp32", "fp32_kure", "ptq_w8a8", "ptq_kure_w8a8"):  # finished stages keep their numbers
        assert records[stage]["test_acc"] > 0.3
    for stage in ("fp32_more", "qat_w8a8", "qat_kure_w8a8"):
        record = records[stage]
        assert record["status"] == "diverged" and record["epoch"] == 1 and record["step"] >= 1, record
        assert f"{stage}: diverged at epoch 1, step {record['step']}: the weight" in log
        assert not (out / "stages" / f"{stage}.json").exists()  # not "finished": a resume retries it
    assert "## Diverged (no result)" in (out / "results.md").read_text()


def test_fit_stops_before_a_non_finite_update():
    from paddle_kure.errors import DivergenceError
    from paddle_kure.train import batch_order

    paddle.seed(0)
    model = paddle.nn.Linear(4, 3)
    before = [p.numpy().copy() for p in model.parameters()]
    x, y = np.random.default_rng(0).normal(size=(32, 4)).astype("float32"), np.zeros(32, "int64")
    x[batch_order(32, 8, seed=0, epoch=0)[1]] = np.inf  # the second batch of epoch 1
    optimizer = paddle.optimizer.SGD(0.1, parameters=model.parameters())
    with pytest.raises(DivergenceError, match="probe: diverged at epoch 1, step 2") as info:
        fit(model, optimizer, x, y, epochs=1, batch_size=8, seed=0, progress=False, desc="probe")
    assert info.value.record() == {"status": "diverged", "stage": "probe", "epoch": 1, "step": 2,
                                   "cause": "the loss (nan)"}
    # the first step was taken, the non-finite one was not
    assert all(np.isfinite(p.numpy()).all() for p in model.parameters())
    assert not np.array_equal(before[0], model.weight.numpy())


def damaged_data_dir(tmp_path, damage):
    folder = tmp_path / "data"
    folder.mkdir()
    for name in os.listdir(DATA):
        if name.endswith(".gz"):
            os.symlink(os.path.join(DATA, name), folder / name)
    damage(folder)
    return folder


@pytest.mark.parametrize("damage, words", [
    (lambda d: (os.remove(d / "t10k-images-idx3-ubyte.gz"), (d / "t10k-images-idx3-ubyte.gz").write_bytes(
        open(os.path.join(DATA, "t10k-images-idx3-ubyte.gz"), "rb").read()[:100000])),
     ["t10k-images-idx3-ubyte.gz: cannot be read (EOFError"]),
    (lambda d: (os.remove(d / "t10k-labels-idx1-ubyte.gz"),
                os.symlink(os.path.join(DATA, "train-labels-idx1-ubyte.gz"), d / "t10k-labels-idx1-ubyte.gz")),
     ["t10k-images-idx3-ubyte.gz holds 10000 images", "t10k-labels-idx1-ubyte.gz 60000 labels",
      "do not belong together"]),
], ids=["truncated-gz", "counts-differ"])
def test_damaged_data_files_are_named(tmp_path, capsys, damage, words):
    folder = damaged_data_dir(tmp_path, damage)
    config = write_config(tmp_path / "c.yaml", dict(TINY, Global=dict(TINY["Global"], data_dir=str(folder))))
    assert cli_main(["run", str(config), "--output-dir", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"paddle-kure: error: {config}: Global.data_dir: {folder}") and err.count("\n") == 1, err
    assert all(w in err for w in words), err


@pytest.mark.parametrize("change, words", [
    ({"QuantAware": {"activation_quantize_type": "abs_max"}},
     "QuantAware.activation_quantize_type: 'abs_max' works on static graphs only"),
    ({"Kurtosis": {"include": ["conv9.*"]}}, "Kurtosis.include: 'conv9.*' matches no parameter of SmallCNN"),
    ({"Kurtosis": {"exclude": ["*"]}},
     "Kurtosis: include [], exclude ['*'], layer_types [] and min_size 0 leave no weight"),
    ({"Kurtosis": {"min_size": 10 ** 9}}, "and min_size 1000000000 leave no weight of SmallCNN"),
    ({"Kurtosis": {"layer_types": ["Conv2D"], "exclude": ["conv*"]}}, "leave no weight of SmallCNN"),
    ({"Kurtosis": {"target": 1e39}}, "Kurtosis.target must be a finite number in (1, 3.40282e+38], got 1e+39"),
    ({"TrainConfig": {"learning_rate": 1e39}}, "TrainConfig.learning_rate must be a finite number in (0, 3.40282e+38]"),
    ({"Global": {"seed": 2 ** 32}}, "Global.seed must be an int in [0, 4294967295], got 4294967296"),
    ({"Prune": {"schedule": {"type": "constant", "sparsity": 0.5}, "include": ["fc9.weight"]}}, "Prune"),
])
def test_config_errors_come_before_any_training(tmp_path, capsys, change, words):
    data = {section: dict(TINY.get(section, {}), **values) for section, values in change.items()}
    config = write_config(tmp_path / "c.yaml", dict(TINY, **data))
    out = tmp_path / "out"
    assert cli_main(["run", str(config), "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"paddle-kure: error: {config}: ") and words in err and err.count("\n") == 1, err
    assert not out.exists()  # nothing ran, nothing was written


@pytest.mark.parametrize("content, words", [
    (b"Global: {seed: \xff}\n", "not UTF-8 text"),
    (b"", "the config is empty; start from a copy of"),
    (b'Global: {"seed": 1', "not valid YAML"),
])
def test_unreadable_configs_are_named(tmp_path, capsys, content, words):
    config = tmp_path / "c.yaml"
    config.write_bytes(content)
    assert cli_main(["run", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"paddle-kure: error: {config}: {words}") and err.count("\n") == 1, err
    assert cli_main(["run", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"paddle-kure: error: {tmp_path}: is a folder, not a config file\n"


def test_transformer_errors_are_one_line(tmp_path, capsys):
    assert cli_main(["transformer", str(tmp_path / "none.yaml")]) == 2
    assert capsys.readouterr().err == f"paddle-kure: error: {tmp_path / 'none.yaml'}: not found\n"
    study = os.path.join(SOURCE_ROOT, "configs", "transformer_study.yaml")
    assert cli_main(["transformer", study, "--epochs", "0", "--output", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"paddle-kure: error: {study}: ") and "epochs must be an int >= 1, got 0" in err, err
    assert cli_main(["transformer", study, "--variants", "nope"]) == 2
    assert "--variants: unknown variant(s) ['nope']" in capsys.readouterr().err


def test_a_state_dict_of_another_architecture_is_refused():
    model = paddle.nn.Sequential(paddle.nn.Linear(4, 3))
    with pytest.raises(UserError, match=r"other.pdparams: not a state dict of this Sequential: "
                                        r"missing keys \['0.bias', '0.weight'\], unexpected keys \['fc.weight'\]"):
        set_state_strictly(model, {"fc.weight": paddle.zeros([4, 3])}, "other.pdparams")
    with pytest.raises(UserError, match=r"shapes differ \(0.weight \[4, 2\] vs \[4, 3\]\)"):
        set_state_strictly(model, {"0.weight": paddle.zeros([4, 2]), "0.bias": paddle.zeros([3])}, "x")


def test_resuming_a_checkpoint_of_another_architecture_is_refused(tmp_path):
    x, y = np.random.default_rng(0).normal(size=(16, 4)).astype("float32"), np.zeros(16, "int64")
    small = paddle.nn.Linear(4, 3)
    fit(small, paddle.optimizer.SGD(0.1, parameters=small.parameters()), x, y, 1, 8, progress=False,
        checkpoint_dir=str(tmp_path))
    other = paddle.nn.Sequential(paddle.nn.Linear(4, 3))
    with pytest.raises(UserError, match="model.pdparams: not a state dict of this Sequential"):
        fit(other, paddle.optimizer.SGD(0.1, parameters=other.parameters()), x, y, 2, 8, progress=False,
            checkpoint_dir=str(tmp_path), resume=True)


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(str(path)) as f:
            f.write("half of the new")
            raise RuntimeError("killed")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["results.json"]


def test_kurtosis_decay_numbers():
    assert KurtosisDecay(coeff=np.float32(0.1)).coeff == pytest.approx(0.1)
    assert KurtosisDecay(coeff=1, target=np.float64(3.0)).target == 3.0
    assert KurtosisDecay(coeff=3.4e38).coeff == 3.4e38  # float32's largest values are allowed
    for key in ("coeff", "target", "l2_coeff"):
        with pytest.raises(ValueError, match=rf"KurtosisDecay.{key} must be a finite number in .*, 3.40282e\+38\]"):
            KurtosisDecay(**{key: 1e39})
    with pytest.raises(ValueError, match="coeff must be a finite number"):
        KurtosisDecay(coeff=float("nan"))
    with pytest.raises(ConfigError, match=r"x.yaml: Kurtosis.coeff must be a finite number in \[0, 3.40282e\+38\]"):
        config_from_dict({"Kurtosis": {"coeff": 1e39}}, source="x.yaml")


def test_an_output_folder_that_is_a_file_is_named(reference, tmp_path, capsys):
    config, _ = reference
    taken = tmp_path / "taken"
    taken.write_text("a file")
    assert run_here(config, taken) == 2
    assert capsys.readouterr().err == f"paddle-kure: error: {taken}: the output folder is a file\n"
    assert run_here(config, taken / "below") == 2
    assert capsys.readouterr().err.startswith(f"paddle-kure: error: {taken / 'below'}: cannot write into the "
                                              f"output folder (")


def test_stage_fingerprints_hold_what_each_stage_depends_on():
    from paddle_kure.apps.runguard import stage_fingerprint

    base = config_from_dict(TINY, source="a.yaml")

    def changed(stage, section, **values):
        other = config_from_dict(dict(TINY, **{section: dict(TINY.get(section, {}), **values)}), source="b.yaml")
        return stage_fingerprint(base, stage) != stage_fingerprint(other, stage)

    stages = ["fp32", "fp32_more", "fp32_kure", "ptq_w8a8", "ptq_kure_w8a8", "qat_w8a8", "qat_pact_w8a8",
              "qat_kure_w8a8", "an_experiment"]
    assert [changed(s, "Global", seed=12) for s in stages] == [True] * 9
    assert [changed(s, "Global", output_dir="elsewhere") for s in stages] == [False] * 9
    assert [changed(s, "TrainConfig", eval_batch_size=17) for s in stages] == [False] * 9
    # FP32+KURE trains as long as FP32: the QAT keys are not its inputs
    assert [changed(s, "TrainConfig", epochs=3) for s in stages] == [True] * 9
    assert [changed(s, "TrainConfig", qat_learning_rate=1e-2) for s in stages] == \
        [False, True, False, False, False, True, True, True, True]
    assert [changed(s, "Kurtosis", coeff=0.5) for s in stages] == \
        [False, False, True, False, True, False, False, True, True]
    assert [changed(s, "Kurtosis", exclude=["fc2.*"]) for s in stages] == \
        [False, False, True, False, True, False, False, True, True]
    assert [changed(s, "QuantPost", batch_nums=3) for s in stages] == \
        [False, False, False, True, True, False, False, False, True]
    assert [changed(s, "QuantPost", algo="KL") for s in stages] == \
        [False, False, False, True, True, False, False, False, True]
    # another precision added: the stages of the first one stay valid
    assert [changed(s, "QuantAware", weight_bits=[8, 4], activation_bits=[8, 4]) for s in stages] == \
        [False] * 8 + [True]
