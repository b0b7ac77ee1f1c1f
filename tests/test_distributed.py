"""Data parallelism: two processes under ``paddle.distributed.launch`` (gloo on CPU)
reach the parameters one process reaches with the same global batch, with KURE
(``KurtosisDecay``) and PACT in the model.

Run as a script, this file is the worker: ``launch ... tests/test_distributed.py OUT.npz``.
"""
import os
import subprocess
import sys

import numpy as np

GLOBAL_BATCH, EPOCHS, SEED = 16, 2, 5


def build_and_train(data_parallel, batch_size=GLOBAL_BATCH):
    import paddle

    from paddle_kure import KurtosisDecay
    from paddle_kure.nn import PACT
    from paddle_kure.train import fit

    paddle.seed(SEED)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 8)).astype("float32") * 2
    y = rng.integers(0, 4, 48).astype("int64")
    kure = paddle.ParamAttr(regularizer=KurtosisDecay(0.5, l2_coeff=1e-3))
    model = paddle.nn.Sequential(paddle.nn.Linear(8, 16, weight_attr=kure), PACT(init=1.0, signed=True),
                                 paddle.nn.ReLU(), paddle.nn.Linear(16, 4, weight_attr=kure))
    optimizer = paddle.optimizer.Momentum(0.05, momentum=0.9, parameters=model.parameters())
    trained = paddle.DataParallel(model) if data_parallel else model
    fit(trained, optimizer, x, y, epochs=EPOCHS, batch_size=batch_size, seed=SEED, progress=False)
    return {name: p.numpy() for name, p in model.named_parameters()}


def test_two_processes_match_one_process(tmp_path):
    import paddle

    out = tmp_path / "params.npz"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # the launcher reads any CUDA_VISIBLE_DEVICES, even an empty one, as "GPUs wanted"
    env.pop("CUDA_VISIBLE_DEVICES", None)
    command = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
               "--log_dir", str(tmp_path / "logs"), os.path.abspath(__file__), str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("*")) if (tmp_path / "logs").exists() else ""
    assert done.returncode == 0 and out.exists(), done.stdout[-3000:] + done.stderr[-3000:] + logs[-3000:]
    parallel = dict(np.load(out))
    paddle.disable_static()
    single = build_and_train(data_parallel=False)
    assert sorted(parallel) == sorted(single)
    full_batch = build_and_train(data_parallel=False, batch_size=48)
    alpha = next(name for name in single if "alpha" in name)
    assert not np.allclose(single[alpha], 1.0), "PACT alpha never trained: the test would not cover it"
    for name in single:
        np.testing.assert_allclose(parallel[name], single[name], rtol=1e-5, atol=1e-6, err_msg=name)
    # each process alone with half the batch (no gradient averaging) ends elsewhere
    half = build_and_train(data_parallel=False, batch_size=GLOBAL_BATCH // 2)
    assert any(not np.allclose(half[n], single[n], atol=1e-4) for n in single)
    assert any(not np.allclose(full_batch[n], single[n], atol=1e-4) for n in single)


if __name__ == "__main__":
    import paddle

    paddle.distributed.init_parallel_env()
    params = build_and_train(data_parallel=True)
    if paddle.distributed.get_rank() == 0:
        np.savez(sys.argv[1], **params)
