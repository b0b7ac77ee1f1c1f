"""Speed of the fused kurtosis operators against their limits, measured in one run.

For each float32 tensor size it times, interleaved round by round and keeping
each one's best time (the machine may be shared: a best time is the one least
disturbed by other work):
  reg op      paddle_kure.kurtosis_decay_grad, what KurtosisDecay runs per parameter and step
  copyto      numpy.copyto into a preallocated array: one read and one write of
              the tensor, the memory limit (Paddle's clone/assign allocate fresh
              memory and pay page faults on every call)
  scale       paddle.scale of the same tensor: Paddle's own dispatch and
              elementwise floor for an operator that returns a new tensor
  fused       paddle_kure.kurtosis forward + backward
  composite   the same with Paddle ops and autograd, ((t - t.mean()) / t.std()) ** 4 .mean()
Then one Adam step of an MLP of about 1e6 parameters: no regularizer, Paddle's
L2Decay on every weight, KurtosisDecay on every weight through ParamAttr (both
take Paddle's per-parameter regularization path), and KurtosisDecay applied with
its opt-in in-place KurtosisDecay.apply_to_grads_.

    python benchmarks/bench_kurtosis.py [--sizes 1e3 1e5 1e7] [--repeats 50]
    python benchmarks/bench_kurtosis.py --write docs/results/benchmarks.md
        (replaces that file's section for this benchmark with the tables printed)
"""
import argparse
import datetime
import os
import platform
import time

import numpy as np
import paddle

import paddle_kure

SECTION_TITLE = "## Fused kurtosis operators: `python benchmarks/bench_kurtosis.py`"
DEFAULT_SIZES = [1e3, 1e4, 1e5, 1e6, 3e6, 1e7, 3e7]


def best_times(fns, rounds, burst=5, warmup=2):
    """Best seconds of each callable in ``fns`` (a dict). Every round runs each one
    ``burst`` times in a row (warm caches, as in a loop), the callables in turn, so
    that all see the same share of any other work on the machine."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            for _ in range(burst):
                start = time.perf_counter()
                fn()
                if paddle.is_compiled_with_cuda():
                    paddle.device.synchronize()
                best[name] = min(best[name], time.perf_counter() - start)
    return best


def composite_forward_backward(x):
    k = (((x - x.mean()) / x.std()) ** 4).mean()
    paddle.grad([(k - 1.8) ** 2], [x])


def fused_forward_backward(x):
    k = paddle_kure.kurtosis(x)
    paddle.grad([(k - 1.8) ** 2], [x])


def op_rows(sizes, repeats, composite_max):
    for n in sizes:
        n = int(n)
        data = np.random.default_rng(0).normal(size=n).astype("float32")
        target = np.empty_like(data)
        x = paddle.to_tensor(data)
        x_grad = paddle.to_tensor(data, stop_gradient=False)
        fns = {
            "op": lambda: paddle_kure.kurtosis_decay_grad(x, 1e-3, 1.8, 1e-4),
            "copyto": lambda: np.copyto(target, data),
            "scale": lambda: paddle.scale(x, 2.0),
            "fused": lambda: fused_forward_backward(x_grad),
        }
        if n <= composite_max:
            fns["composite"] = lambda: composite_forward_backward(x_grad)
        rounds = max(3, min(repeats, int(1e8 // n)))
        yield n, best_times(fns, rounds, burst=1 if n > composite_max / 10 else 5)


def mlp(widths, regularizer):
    layers = []
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        attr = paddle.ParamAttr(regularizer=regularizer()) if regularizer else None
        layers.append(paddle.nn.Linear(fan_in, fan_out, weight_attr=attr))
        if i < len(widths) - 2:
            layers.append(paddle.nn.ReLU())
    return paddle.nn.Sequential(*layers)


def make_step(param_attr_regularizer=None, in_place_kure=None, widths=(784, 1024, 256, 10), batch=128):
    """One Adam step of a fresh MLP; ``param_attr_regularizer()`` makes each weight's
    ParamAttr regularizer; ``in_place_kure`` is applied with apply_to_grads_ instead."""
    paddle.seed(0)
    model = mlp(widths, param_attr_regularizer)
    opt = paddle.optimizer.Adam(1e-3, parameters=model.parameters())
    weights = [layer.weight for layer in model if isinstance(layer, paddle.nn.Linear)]
    x = paddle.randn([batch, widths[0]])
    y = paddle.randint(0, widths[-1], [batch, 1])

    def step():
        loss = paddle.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        if in_place_kure is not None:
            in_place_kure.apply_to_grads_(weights)
        opt.step()
        opt.clear_grad()

    return sum(int(np.prod(p.shape)) for p in model.parameters()), step


def step_rows(repeats):
    kure = lambda: paddle_kure.KurtosisDecay(1e-3, l2_coeff=1e-4)  # noqa: E731
    configs = {
        "none": make_step(),
        "L2Decay(1e-4)": make_step(lambda: paddle.regularizer.L2Decay(1e-4)),
        "KurtosisDecay(1e-3, l2_coeff=1e-4)": make_step(kure),
        "KurtosisDecay(1e-3, l2_coeff=1e-4).apply_to_grads_": make_step(in_place_kure=kure()),
    }
    n_params = next(iter(configs.values()))[0]
    return n_params, best_times({name: step for name, (_, step) in configs.items()}, repeats, burst=3, warmup=3)


def regularization_rows(repeats, widths=(784, 1024, 256, 10)):
    """Seconds of the regularization work alone for the MLP's weights, one step's
    worth: Paddle's mechanism as its optimizers run it
    (Optimizer._create_regularization_of_grad: the regularizer's term, then add_n
    with the gradient, two new tensors per parameter), and apply_to_grads_."""
    kure = paddle_kure.KurtosisDecay(1e-3, l2_coeff=1e-4)
    l2 = paddle.regularizer.L2Decay(1e-4)
    opt = paddle.optimizer.Adam(1e-3, parameters=[paddle.create_parameter([1], "float32")])
    weights = [paddle.create_parameter([i, o], "float32") for i, o in zip(widths[:-1], widths[1:])]
    grads = [paddle.randn(w.shape) for w in weights]
    for w, g in zip(weights, grads):
        w.grad = g.clone()

    def mechanism(regularizer):
        return lambda: [opt._create_regularization_of_grad(w, g, regularizer) for w, g in zip(weights, grads)]

    return best_times({
        "L2Decay through Paddle's mechanism": mechanism(l2),
        "KurtosisDecay through Paddle's mechanism": mechanism(kure),
        "KurtosisDecay.apply_to_grads_": lambda: kure.apply_to_grads_(weights),
        "paddle_kure.kurtosis of each weight (moments only)": lambda: [paddle_kure.kurtosis(w) for w in weights],
    }, repeats)


def machine_line():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def report(args):
    load_before = os.getloadavg()[0]
    lines = [SECTION_TITLE, ""]
    rows = list(op_rows(args.sizes, args.repeats, args.composite_max))
    n_params, steps = step_rows(args.repeats)
    regularization = regularization_rows(args.repeats)
    load_after = os.getloadavg()[0]
    lines += [
        f"{datetime.date.today()}, paddle {paddle.__version__} on {paddle.device.get_device()}, {machine_line()}; "
        f"load average {load_before:.1f} at the start, {load_after:.1f} at the end. Float32; each time is the "
        f"best of up to {args.repeats} rounds of a few calls in a row (fewer for large sizes), all columns of a row "
        "timed in turn in the same rounds.",
        "",
        "| elements | reg op | numpy.copyto | reg op / copyto | paddle.scale | reg op / scale "
        "| fused fwd+bwd | composite fwd+bwd | composite / fused |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, t in rows:
        composite = (f"{t['composite'] * 1e3:.3f} ms | {t['composite'] / t['fused']:.1f}x"
                     if "composite" in t else "- | -")
        lines.append(
            f"| {n:.0e} | {t['op'] * 1e3:.3f} ms | {t['copyto'] * 1e3:.3f} ms | {t['op'] / t['copyto']:.2f}x "
            f"| {t['scale'] * 1e3:.3f} ms | {t['op'] / t['scale']:.2f}x | {t['fused'] * 1e3:.3f} ms | {composite} |"
        )
    base, l2 = steps["none"], steps["L2Decay(1e-4)"]
    lines += [
        "",
        f"MLP training step (Adam, batch 128, {n_params:,} parameters, a regularizer on every weight; "
        "vs L2Decay in percent of the L2Decay step):",
        "",
        "| regularizer | step | vs none | vs L2Decay |",
        "|---|---:|---:|---:|",
    ]
    for name, seconds in steps.items():
        lines.append(f"| {name} | {seconds * 1e3:.2f} ms | {100 * (seconds / base - 1):+.1f}% "
                     f"| {100 * (seconds / l2 - 1):+.1f}% |")
    lines += [
        "",
        "Where the regularizer's share of that step goes: the same work alone for the three weights "
        "(one step's worth):",
        "",
        "| work | time |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {seconds * 1e3:.3f} ms |" for name, seconds in regularization.items()]
    return "\n".join(lines) + "\n"


def write_section(path, section):
    """Replaces the section titled SECTION_TITLE in ``path`` (up to the next '## ') or appends it."""
    with open(path) as f:
        text = f.read()
    start = text.find(SECTION_TITLE)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(SECTION_TITLE))
        text = text[:start] + section + ("\n" + text[end + 1:] if end >= 0 else "")
    with open(path, "w") as f:
        f.write(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=DEFAULT_SIZES)
    parser.add_argument("--repeats", type=int, default=50, help="rounds (fewer for the largest sizes)")
    parser.add_argument("--composite-max", type=float, default=1e7,
                        help="largest size for the slow composite (seconds per call beyond)")
    parser.add_argument("--write", metavar="MARKDOWN", help="update this file's section for this benchmark")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if min(args.sizes) < 2:
        parser.error("--sizes must be >= 2 (kurtosis needs two values)")
    section = report(args)
    print(section)
    if args.write:
        write_section(args.write, section)
        print(f"wrote the section to {args.write}")


if __name__ == "__main__":
    main()
