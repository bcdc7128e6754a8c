"""Speed of ``rank`` against the authors' protocol (issue 9), measured side by side in one run.

The authors' image experiment (image_exp/adv2know.py of Liang et al.'s public code) measures
alpha1 one image at a time (batch size 1). For every transfer (source) model and every test
image it checks the reference's prediction, attacks the reference and the transfer model with
FGSM (cross-entropy on the attacked model's own prediction, signed step, inputs in [-1, 1]),
and evaluates the transfer model on the clean and both adversarial images and the reference on
the clean and its adversarial image:

    alpha1(x) = ||T(x) - T(x + delta_R)|| / ||T(x) - T(x + delta_T)||

:func:`authors_loop` re-implements that loop from this description (benchmark only, not part of
the library). Two details differ, neither changing the number of passes: the published FGSM
starts from a uniform random point in the box and steps 2 eps (their eps is half the box
radius); here it starts at x and steps by the radius ``EPS`` so that the library's
``first_order`` FGSM crafts the same perturbation and alpha1 can be compared image by image.
The fine-tuned model's clean loss the published loop also records (for knowledge transfer) is
left out: it is no part of alpha1. The published code leaves the parameters requiring
gradients, so every backward also fills the parameters' gradients; by default the loop here
freezes them (``requires_grad=False``, the loop at its fastest, a conservative comparison).

``--as-published`` runs the published setting instead, on both sides: the loop's FGSM starts
from a uniform random point in the box (radius 2 eps_a = 0.2 on [-1, 1]) and steps by the
radius, the parameters keep requiring gradients (the models as the published code and as a
user hand them over), and ``rank`` runs the same attack (``solver="pgd", steps=1,
random_start=True, iterate="last"``, step = radius) for ``alpha1``, ``alpha2`` and
``combined``. The random starts differ between the two, so the per-image alpha1 are not
compared there (only the mean alpha1 of each, reported).

Compared with ``advtransfer.rank(methods=["alpha1"], correct_only=True)`` on the same 3 random
CIFAR ResNet-18 sources, reference and 48 random 32 px images in [-1, 1] (labels = the
reference's predictions, so every image is kept as in the published loop). Reports the time of
each (median of ``--repeats`` interleaved runs), the ratio, and the Pearson r between the
per-image alpha1 of both (from :func:`advtransfer.metrics.measure_matrix`, untimed) and the
largest difference between the mean alpha1 of ``rank`` and of the loop.

``--channels-last`` gives ``rank`` channels_last copies of the models and inputs (the library
already hands a convolutional model its image batches in channels_last on the CPU, see
:func:`advtransfer.models.adapters.forward`; this converts the weights too).

Run: ``python benchmarks/bench_peer.py [--repeats 3] [--threads 2] [--channels-last]
[--as-published] [--json]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import numpy as np
import torch
from torch import nn

from advtransfer import rank
from advtransfer.attacks import AttackConfig
from advtransfer.metrics import measure_matrix
from advtransfer.models.architectures import resnet18_cifar

N_SOURCES = 3
N_IMAGES = 48
N_CLASSES = 10
EPS = 0.03  # L-inf radius on inputs in [-1, 1]
BOUNDS = (-1.0, 1.0)
ATTACK = {"eps": EPS, "norm": "linf", "objective": "ce", "solver": "first_order",
          "bounds": BOUNDS}
PUBLISHED_RADIUS = 0.2  # the authors' --eps 0.1, clamped at +-2 eps on [-1, 1]
PUBLISHED_ATTACK = {"eps": PUBLISHED_RADIUS, "norm": "linf", "objective": "ce", "solver": "pgd",
                    "steps": 1, "step_size": PUBLISHED_RADIUS, "random_start": True,
                    "iterate": "last", "bounds": BOUNDS}


def fgsm(model: nn.Module, image: torch.Tensor, eps: float,
         random_start: bool = False) -> torch.Tensor:
    """The published FGSM, one image: label = the model's own prediction (a forward pass),
    one signed gradient step of the cross-entropy (a forward and a backward) from ``image`` or,
    with ``random_start``, from a uniform point of the box, clamped to the box and to [-1, 1]."""
    label = model(image).detach().argmax(1)
    start = image + (torch.rand_like(image) * 2 - 1) * eps if random_start else image
    current = start.clamp(*BOUNDS).requires_grad_(True)
    loss = nn.functional.cross_entropy(model(current), label)
    model.zero_grad()
    loss.backward()
    step = (current + current.grad.sign() * eps - image).clamp(-eps, eps)
    return (image + step).clamp(*BOUNDS).detach()


def authors_loop(reference: nn.Module, sources: list[nn.Module], x: torch.Tensor,
                 y: torch.Tensor, eps: float = EPS, random_start: bool = False) -> np.ndarray:
    """Per-image alpha1 (sources x images) as the published loop computes it, batch size 1."""
    alphas = np.full((len(sources), len(x)), np.nan)
    for s, transfer in enumerate(sources):
        for k in range(len(x)):
            image, label = x[k:k + 1], y[k:k + 1]
            if reference(image).argmax(1).item() != label.item():
                continue
            true_outputs = transfer(image)
            adversarial = fgsm(reference, image, eps, random_start)
            outputs = transfer(adversarial)
            base_adversarial = fgsm(transfer, image, eps, random_start)
            base_outputs = transfer(base_adversarial)
            alphas[s, k] = ((true_outputs - outputs).norm()
                            / (true_outputs - base_outputs).norm()).item()
            # the reference's own deviation, used by the published loop for alpha2
            (reference(image) - reference(adversarial)).flatten()
    return alphas


def setup(seed: int = 0) -> tuple[nn.Module, list[nn.Module], torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    reference = resnet18_cifar(N_CLASSES).eval()
    sources = [resnet18_cifar(N_CLASSES).eval() for _ in range(N_SOURCES)]
    x = torch.rand(N_IMAGES, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        y = reference(x).argmax(1)
    return reference, sources, x, y


def run_rank(reference: nn.Module, sources: list[nn.Module], x: torch.Tensor,
             y: torch.Tensor, batch_size: int, published: bool = False) -> dict[str, float]:
    pool = {f"s{i}": m for i, m in enumerate(sources)}
    methods = ["alpha1", "alpha2", "combined"] if published else ["alpha1"]
    attack = PUBLISHED_ATTACK if published else ATTACK
    r = rank(pool, (x, y), reference, methods=methods, correct_only=True, attack_samples=None,
             batch_size=batch_size, seed=0, **attack)
    return r.scores["alpha1"]


def per_image_alpha1(reference: nn.Module, sources: list[nn.Module],
                     x: torch.Tensor) -> np.ndarray:
    out = measure_matrix([reference, *sources], ["reference", *map(str, range(N_SOURCES))], x,
                         AttackConfig(**ATTACK), pairs=[(0, i) for i in range(1, N_SOURCES + 1)])
    return np.stack([out[(0, i)].alpha1_per_sample for i in range(1, N_SOURCES + 1)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--channels-last", action="store_true",
                        help="give rank channels_last copies of the models and inputs")
    parser.add_argument("--as-published", action="store_true",
                        help="leave the parameters requiring gradients in the authors' loop")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reference, sources, x, y = setup()
    if not args.as_published:
        for m in (reference, *sources):
            m.requires_grad_(False)

    ours_models, x_ours = (reference, sources), x
    if args.channels_last:
        cl = torch.channels_last
        ours_models = tuple(copy.deepcopy(m).to(memory_format=cl) for m in (reference, *sources))
        ours_models = (ours_models[0], list(ours_models[1:]))
        x_ours = x.contiguous(memory_format=cl)
    theirs, ours = [], []
    for _ in range(args.repeats):  # interleaved, so load changes hit both
        start = time.perf_counter()
        loop_alpha = authors_loop(reference, sources, x, y,
                                  *((PUBLISHED_RADIUS, True) if args.as_published else ()))
        theirs.append(time.perf_counter() - start)
        start = time.perf_counter()
        scores = run_rank(*ours_models, x_ours, y, args.batch_size, args.as_published)
        ours.append(time.perf_counter() - start)

    t_theirs, t_ours = statistics.median(theirs), statistics.median(ours)
    result = {"authors_loop_s": round(t_theirs, 2), "rank_s": round(t_ours, 2),
              "speedup": round(t_theirs / t_ours, 2)}
    if args.as_published:  # different random starts: the means, not image by image
        result["mean_alpha1_loop"] = [round(float(np.mean(a)), 4) for a in loop_alpha]
        result["mean_alpha1_rank"] = [round(scores[f"s{i}"], 4) for i in range(N_SOURCES)]
    else:
        lib_alpha = per_image_alpha1(reference, sources, x)
        r = float(np.corrcoef(loop_alpha.ravel(), lib_alpha.ravel())[0, 1])
        result["pearson_r_alpha1_per_image"] = round(r, 4)
        result["max_abs_diff_mean_alpha1"] = max(
            abs(scores[f"s{i}"] - float(np.mean(loop_alpha[i]))) for i in range(N_SOURCES))
    result |= {"threads": args.threads,
              "repeats": args.repeats, "batch_size": args.batch_size,
              "channels_last": args.channels_last, "as_published": args.as_published}
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>28}: {v}")


if __name__ == "__main__":
    main()
