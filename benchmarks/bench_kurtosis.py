"""Speed of the fused kurtosis operators against their baselines, measured in one run.

For each tensor size it times (median of repeats, float32, on the current device):
  fused      paddle_kure.kurtosis forward + backward
  composite  the same with Paddle ops and autograd (Zanetti's formulation:
             ((t - t.mean()) / t.std()) ** 4 .mean())
  reg op     paddle_kure.kurtosis_decay_grad (what KurtosisDecay runs per step)
  copy       a plain read + write of the tensor (memory-bandwidth floor)
and prints ratios. Then one Adam step of an MLP of about 1e6 parameters with no
regularizer, with Paddle's L2Decay and with KurtosisDecay on every weight (a
ParamAttr regularizer of any kind takes Paddle's per-parameter regularization path,
so L2Decay is the reference for what the mechanism itself costs).

    python benchmarks/bench_kurtosis.py [--sizes 1e3 1e5 1e7] [--repeats 20]
"""
import argparse
import statistics
import time

import numpy as np
import paddle

import paddle_kure


def median_seconds(fn, repeats, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if paddle.is_compiled_with_cuda():
            paddle.device.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def composite_forward_backward(x):
    k = (((x - x.mean()) / x.std()) ** 4).mean()
    ((k - 1.8) ** 2).backward()


def fused_forward_backward(x):
    k = paddle_kure.kurtosis(x)
    ((k - 1.8) ** 2).backward()


def op_table(sizes, repeats):
    rows = []
    for n in sizes:
        x = paddle.to_tensor(np.random.default_rng(0).normal(size=int(n)).astype("float32"), stop_gradient=False)
        reps = max(3, min(repeats, int(2e8 // n)))
        t_fused = median_seconds(lambda: fused_forward_backward(x), reps)
        t_comp = median_seconds(lambda: composite_forward_backward(x), reps)
        t_reg = median_seconds(lambda: paddle_kure.kurtosis_decay_grad(x.detach(), 1.0), reps)
        t_copy = median_seconds(lambda: paddle.assign(x.detach()), reps)
        rows.append((int(n), t_fused, t_comp, t_reg, t_copy))
    return rows


def mlp(widths, regularizer):
    layers = []
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        attr = paddle.ParamAttr(regularizer=regularizer()) if regularizer else None
        layers.append(paddle.nn.Linear(fan_in, fan_out, weight_attr=attr))
        if i < len(widths) - 2:
            layers.append(paddle.nn.ReLU())
    return paddle.nn.Sequential(*layers)


def step_time(regularizer, repeats, widths=(784, 1024, 256, 10), batch=128):
    """Median seconds of one Adam step; ``regularizer()`` makes each weight's regularizer (None: none)."""
    paddle.seed(0)
    model = mlp(widths, regularizer)
    opt = paddle.optimizer.Adam(1e-3, parameters=model.parameters())
    x = paddle.randn([batch, widths[0]])
    y = paddle.randint(0, widths[-1], [batch, 1])

    def step():
        loss = paddle.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.clear_grad()

    n_params = sum(int(np.prod(p.shape)) for p in model.parameters())
    return n_params, median_seconds(step, repeats, warmup=3)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e3, 1e4, 1e5, 1e6, 1e7])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print(f"paddle {paddle.__version__}, device {paddle.device.get_device()}, float32, median of repeats\n")
    print("| elements | fused fwd+bwd | composite fwd+bwd | composite / fused | reg op | copy | reg op / copy |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n, t_fused, t_comp, t_reg, t_copy in op_table(args.sizes, args.repeats):
        print(f"| {n:.0e} | {t_fused * 1e3:.3f} ms | {t_comp * 1e3:.3f} ms | {t_comp / t_fused:.1f}x "
              f"| {t_reg * 1e3:.3f} ms | {t_copy * 1e3:.3f} ms | {t_reg / t_copy:.2f}x |")
    # Paddle's own L2Decay in ParamAttr is the reference for what any per-parameter regularizer costs.
    n_params, base = step_time(None, args.repeats)
    _, l2 = step_time(lambda: paddle.regularizer.L2Decay(1e-4), args.repeats)
    _, kure = step_time(lambda: paddle_kure.KurtosisDecay(1e-3, l2_coeff=1e-4), args.repeats)
    print(f"\nMLP training step (Adam, batch 128, {n_params:,} parameters, a regularizer on every weight):\n")
    print("| regularizer | step | vs none | vs L2Decay |")
    print("|---|---:|---:|---:|")
    for name, seconds in (("none", base), ("L2Decay(1e-4)", l2), ("KurtosisDecay(1e-3, l2_coeff=1e-4)", kure)):
        print(f"| {name} | {seconds * 1e3:.2f} ms | {100 * (seconds / base - 1):+.1f}% | {100 * (seconds / l2 - 1):+.1f}% |")


if __name__ == "__main__":
    main()
