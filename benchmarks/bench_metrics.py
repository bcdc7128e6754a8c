"""Speed of the metrics, as ratios measured in one run (absolute times are noisy here).

(a) ``transferability`` time over the time of the bare forward/backward passes it must do
    (the same passes written as plain torch code, no validation, no bookkeeping): goal <= 1.15.
(b) ``transfer_matrix`` time for N = 4 models over one pair's ``transferability`` time: each model
    is attacked once, so the goal is close to N/2 = 2 (not N^2/2 = 8).

Run: ``python benchmarks/bench_metrics.py [--repeats 5] [--json]``. Reports the median of
``repeats`` interleaved runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from advtransfer import transfer_matrix, transferability
from advtransfer.data.digits import digits
from advtransfer.models.architectures import digits_cnn

STEPS = 10
EPS = 1.0


def bare_pair(s: torch.nn.Module, t: torch.nn.Module, x: torch.Tensor) -> None:
    """The passes one pair measurement needs: per model a clean forward, STEPS forward+backward
    PGD steps and a final forward; then 4 deviation forwards and 2 random-noise forwards."""
    deltas = []
    for m in (s, t):
        with torch.no_grad():
            y0 = m(x)
        delta = (torch.rand_like(x) - 0.5) * 0.1
        for _ in range(STEPS):
            d = delta.clone().requires_grad_(True)
            loss = (m(x + d) - y0).pow(2).sum()
            (g,) = torch.autograd.grad(loss, d)
            delta = (delta + EPS * g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1))
            n = delta.flatten(1).norm(dim=1).clamp_min(EPS).view(-1, 1, 1, 1)
            delta = ((x + delta * EPS / n).clamp(0, 1) - x).detach()
        with torch.no_grad():
            m(x + delta)
        deltas.append(delta)
    with torch.no_grad():
        for d in deltas:
            s(x + d)
            t(x + d)
        noise = torch.randn_like(x) * 0.01
        s(x + noise)
        t(x + noise)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n", type=int, default=512, help="number of inputs")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    models = [digits_cnn(10, width=16).eval() for _ in range(4)]
    for m in models:
        m.requires_grad_(False)
    x = digits().x_test.repeat(2, 1, 1, 1)[: args.n]
    kw = dict(eps=EPS, steps=STEPS, batch_size=args.n, seed=0)
    transferability(models[0], models[1], x, **kw)  # warm-up
    bare, pair, matrix = [], [], []
    for _ in range(args.repeats):
        bare.append(timed(lambda: bare_pair(models[0], models[1], x)))
        pair.append(timed(lambda: transferability(models[0], models[1], x, **kw)))
        matrix.append(timed(lambda: transfer_matrix(models, x, **kw)))
    b, p, m = (statistics.median(v) for v in (bare, pair, matrix))
    out = {"n_inputs": args.n, "steps": STEPS, "bare_pair_s": b, "transferability_s": p,
           "transfer_matrix_4_s": m, "ratio_transferability_over_bare": p / b,
           "ratio_matrix4_over_pair": m / p}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for k, v in out.items():
            print(f"{k:36s} {v:.4g}" if isinstance(v, float) else f"{k:36s} {v}")


if __name__ == "__main__":
    main()
