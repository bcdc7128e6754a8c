"""Adversarial attacks in input space: PGD (FGSM = one step) and the first-order solver.

The attack on a model f at x is (DESIGN.md §2, the paper's delta_{f,eps}(x))

    delta_{f,eps}(x) = argmax_{||delta||_p <= eps, x + delta in bounds} l_adv(f(x), f(x + delta))

with ``objective="deviation"`` (the theory's, label-free):  l_adv = ||f(x + delta) - f(x)||_2^2,
or ``objective="ce"``: cross-entropy of f(x + delta) against f's own clean prediction argmax f(x).

Solvers
-------
``pgd``
    Projected gradient ascent: delta <- Proj(delta + a * g / ||g||_2) for p = 2 and
    delta <- Proj(delta + a * sign(g)) for p = inf, then x + delta is clamped into ``bounds``.
    ``random_start`` draws delta uniformly inside the eps-ball. The iterate with the largest loss
    (the start included) is returned. FGSM is ``steps=1, random_start=False``. Default step size
    a = eps for one step; else 2 * eps for ``deviation`` (a large step then the projection is a
    damped power iteration on J^T J; smaller steps converge measurably slower) and
    2.5 * eps / steps for ``ce`` (Madry et al. 2018). With the deviation objective
    the gradient vanishes at delta = 0, so ``random_start=False`` starts from the first-order
    solution instead of 0.
``first_order``
    The maximiser of the objective's lowest-order Taylor model. For ``deviation`` that is
    delta = eps * v1(J_f(x)), v1 the top right singular vector of the Jacobian, found by ``steps``
    power iterations on J^T J with Jacobian-vector products (one forward pass, two backward passes
    per iteration, batched over samples); exact for p = 2 as eps -> 0, and eps * sign(v1) for
    p = inf (a heuristic: the Linf problem has no closed form). For ``ce`` it is the normalised
    gradient step eps * g / ||g||_2 (p = 2) or eps * sign(g) (p = inf).

Models must treat samples independently (eval mode; no batch statistics): a sample's attack in a
batch then equals its attack alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from advtransfer.errors import AdvTransferError, AdvTransferTypeError
from advtransfer.models.adapters import OutputSelector, forward, frozen, select_output

Norm = Literal["l2", "linf"]
Objective = Literal["deviation", "ce"]
Solver = Literal["pgd", "first_order"]
Bounds = tuple[float, float] | None
GeneratorLike = torch.Generator | int | None

NORMS = ("l2", "linf")
OBJECTIVES = ("deviation", "ce")
SOLVERS = ("pgd", "first_order")
_BOUNDS_TOL = 1e-6


@dataclass(frozen=True)
class AttackConfig:
    """Validated attack settings; one configuration serves every model (the model is an argument
    of each call). ``eps`` is a positive float or a per-sample tensor of shape (batch,)."""

    eps: float | torch.Tensor
    norm: Norm = "l2"
    objective: Objective = "deviation"
    solver: Solver = "pgd"
    steps: int = 10
    step_size: float | None = None
    random_start: bool = True
    bounds: Bounds = (0.0, 1.0)

    def __post_init__(self) -> None:
        eps = self.eps
        if isinstance(eps, torch.Tensor):
            if eps.numel() == 0 or not torch.isfinite(eps).all() or (eps <= 0).any():
                raise AdvTransferError("eps must be a finite positive float or a tensor of finite "
                                       "positive per-sample values")
        elif isinstance(eps, (int, float)) and not isinstance(eps, bool):
            if not math.isfinite(eps) or eps <= 0:
                raise AdvTransferError(f"eps must be a finite number > 0; got {eps}")
        else:
            raise AdvTransferTypeError(f"eps must be a float or a tensor; got {type(eps).__name__}")
        _choice("norm", self.norm, NORMS)
        _choice("objective", self.objective, OBJECTIVES)
        _choice("solver", self.solver, SOLVERS)
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise AdvTransferError(f"steps must be an integer >= 1; got {self.steps!r}")
        if self.step_size is not None and not (
            isinstance(self.step_size, (int, float)) and math.isfinite(self.step_size)
            and self.step_size > 0
        ):
            raise AdvTransferError(f"step_size must be None or a finite number > 0; "
                                   f"got {self.step_size!r}")
        if self.bounds is not None:
            try:
                lo, hi = (float(b) for b in self.bounds)
            except (TypeError, ValueError):
                raise AdvTransferError(f"bounds must be None or a pair (low, high); "
                                       f"got {self.bounds!r}") from None
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise AdvTransferError(f"bounds must be a finite pair with low < high; "
                                       f"got {self.bounds!r}")
            object.__setattr__(self, "bounds", (lo, hi))

    def step_size_for(self, eps: torch.Tensor) -> torch.Tensor:
        """The PGD step size per sample: ``step_size`` if given; else eps for a single step
        (FGSM), 2 * eps for the deviation objective (a step followed by the projection then acts
        as a damped power iteration towards the top singular direction) and 2.5 * eps / steps
        for ``ce`` (Madry et al. 2018)."""
        if self.step_size is not None:
            return torch.full_like(eps, float(self.step_size))
        if self.steps == 1:
            return eps
        return eps * 2.0 if self.objective == "deviation" else eps * (2.5 / self.steps)


def _choice(name: str, value: object, accepted: tuple[str, ...]) -> None:
    if value not in accepted:
        raise AdvTransferError(f"{name} must be one of {', '.join(map(repr, accepted))}; "
                               f"got {value!r}")


def as_generator(generator: GeneratorLike) -> torch.Generator | None:
    """A ``torch.Generator`` from a generator, an integer seed or None (the global RNG)."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, int) and not isinstance(generator, bool):
        return torch.Generator().manual_seed(generator)
    raise AdvTransferTypeError(f"generator must be a torch.Generator, an int seed or None; "
                               f"got {type(generator).__name__}")


def _randn(shape: torch.Size, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else x.device
    return torch.randn(shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def _rand(shape: torch.Size, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else x.device
    return torch.rand(shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def per_sample_eps(eps: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """eps as a tensor of shape (batch,) in x's dtype and device."""
    n = x.shape[0]
    if isinstance(eps, torch.Tensor):
        e = eps.detach().to(device=x.device, dtype=x.dtype).reshape(-1)
        if e.numel() == 1:
            return e.expand(n).clone()
        if e.numel() != n:
            raise AdvTransferError(f"eps as a tensor must hold one value per sample ({n}); "
                                   f"got {e.numel()} values")
        return e
    return torch.full((n,), float(eps), device=x.device, dtype=x.dtype)


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-sample vector (batch,) viewed to broadcast against x."""
    return v.reshape((-1,) + (1,) * (x.ndim - 1))


def norms(delta: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Per-sample ||delta||_p, shape (batch,)."""
    flat = delta.reshape(delta.shape[0], -1)
    return flat.norm(dim=1) if norm == "l2" else flat.abs().amax(dim=1)


def project(delta: torch.Tensor, eps: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Euclidean projection of each sample's delta onto its ||.||_p <= eps ball."""
    if norm == "l2":
        n = norms(delta, "l2")
        scale = torch.clamp(eps / n.clamp_min(torch.finfo(delta.dtype).tiny), max=1.0)
        return delta * _bcast(scale, delta)
    e = _bcast(eps, delta)
    return torch.maximum(torch.minimum(delta, e), -e)


def clip_to_bounds(x: torch.Tensor, delta: torch.Tensor, bounds: Bounds) -> torch.Tensor:
    """delta such that x + delta lies in [low, high] (never increases any |delta_i|)."""
    if bounds is None:
        return delta
    return (x + delta).clamp(bounds[0], bounds[1]) - x


def random_in_ball(x: torch.Tensor, eps: torch.Tensor, norm: Norm,
                   generator: torch.Generator | None) -> torch.Tensor:
    """Uniform samples inside each sample's eps-ball (radius eps * U^(1/n) for p = 2)."""
    if norm == "linf":
        return (2 * _rand(x.shape, x, generator) - 1) * _bcast(eps, x)
    direction = _unit(_randn(x.shape, x, generator))
    n = x[0].numel()
    radius = eps * _rand(eps.shape, x, generator) ** (1.0 / n)
    return direction * _bcast(radius, x)


def random_on_sphere(x: torch.Tensor, eps: torch.Tensor, norm: Norm,
                     generator: torch.Generator | None) -> torch.Tensor:
    """Random noise of norm exactly eps: a uniform direction for p = 2, random signs for p = inf
    (the same-norm random baseline an attack must beat)."""
    if norm == "linf":
        signs = torch.where(_rand(x.shape, x, generator) < 0.5, -1.0, 1.0).to(x.dtype)
        return signs * _bcast(eps, x)
    return _unit(_randn(x.shape, x, generator)) * _bcast(eps, x)


def _unit(v: torch.Tensor) -> torch.Tensor:
    n = norms(v, "l2").clamp_min(torch.finfo(v.dtype).tiny)
    return v / _bcast(n, v)


def check_bounds(x: torch.Tensor, bounds: Bounds) -> None:
    """Raise if x has values outside ``bounds`` (beyond a 1e-6 tolerance)."""
    if bounds is None or x.numel() == 0:
        return
    lo, hi = float(x.min()), float(x.max())
    if lo < bounds[0] - _BOUNDS_TOL or hi > bounds[1] + _BOUNDS_TOL:
        raise AdvTransferError(
            f"inputs lie in [{lo:.4g}, {hi:.4g}], outside bounds={bounds}; pass the bounds of "
            "your input space (e.g. bounds=(-1.0, 1.0)), or bounds=None for unbounded inputs"
        )


def adversarial_loss(y: torch.Tensor, y_clean: torch.Tensor, objective: Objective) -> torch.Tensor:
    """Per-sample l_adv: ||y - y_clean||^2 (deviation) or CE(y, argmax y_clean) (ce)."""
    if objective == "deviation":
        return (y - y_clean).pow(2).sum(dim=1)
    if y.shape[1] < 2:
        raise AdvTransferError("objective='ce' needs a model with at least 2 outputs (logits); "
                               "use objective='deviation' for scalar outputs")
    return F.cross_entropy(y, y_clean.argmax(dim=1), reduction="none")


def top_singular_direction(model: nn.Module, x: torch.Tensor, *, iterations: int,
                           generator: torch.Generator | None, name: str = "model") -> torch.Tensor:
    """Unit vectors v1(J_f(x)) per sample by power iteration on J^T J (shape of x).

    J v is a Jacobian-vector product obtained by differentiating the vector-Jacobian product
    J^T u with respect to u (the double-backward trick), so a single forward pass serves every
    iteration. The iteration starts from J^T 1 (random only where that is 0), so a sample's
    result does not depend on the rest of its batch. The model must already be frozen.
    """
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad():
        y = forward(model, xg, name=name)
        u = torch.zeros_like(y, requires_grad=True)
        (jt_u,) = torch.autograd.grad(y, xg, u, create_graph=True)
    if not jt_u.requires_grad:  # the output does not depend on the input: J = 0
        return _unit(_randn(x.shape, x, generator))
    # Deterministic start J^T 1 (so a sample's direction does not depend on its batch), random
    # where that vanishes.
    (start,) = torch.autograd.grad(y, xg, torch.ones_like(y), retain_graph=True)
    v = torch.where(_bcast(norms(start, "l2") > 0, x), _unit(start),
                    _unit(_randn(x.shape, x, generator)))
    for _ in range(iterations):
        (jv,) = torch.autograd.grad(jt_u, u, v, retain_graph=True)
        (w,) = torch.autograd.grad(y, xg, jv, retain_graph=True, allow_unused=True)
        if w is None:
            return v
        wn = norms(w, "l2")
        keep = _bcast(wn > 0, w)
        v = torch.where(keep, w / _bcast(wn.clamp_min(torch.finfo(w.dtype).tiny), w), v)
    return v.detach()


def _input_gradient(model: nn.Module, x: torch.Tensor, delta: torch.Tensor,
                    y_clean: torch.Tensor, objective: Objective,
                    name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-sample loss, gradient of the summed loss w.r.t. delta) at x + delta."""
    d = delta.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = adversarial_loss(forward(model, x + d, name=name), y_clean, objective)
        (grad,) = torch.autograd.grad(loss.sum(), d)
    return loss.detach(), grad


def _ascent_direction(grad: torch.Tensor, norm: Norm) -> torch.Tensor:
    return _unit(grad) if norm == "l2" else grad.sign()


def run_attack(model: nn.Module, x: torch.Tensor, config: AttackConfig,
               generator: torch.Generator | None, *, name: str = "model",
               y_clean: torch.Tensor | None = None) -> torch.Tensor:
    """The attack for an already validated configuration and frozen model (internal form of
    :func:`attack`; ``y_clean`` may pass the clean output f(x) when the caller has it)."""
    eps = per_sample_eps(config.eps, x)
    if y_clean is None:
        with torch.no_grad():
            y_clean = forward(model, x, name=name)
    y_clean = y_clean.detach()

    if config.solver == "first_order":
        if config.objective == "deviation":
            v = top_singular_direction(model, x, iterations=config.steps, generator=generator,
                                       name=name)
            step = v if config.norm == "l2" else v.sign()
        else:
            _, grad = _input_gradient(model, x, torch.zeros_like(x), y_clean, "ce", name)
            step = _ascent_direction(grad, config.norm)
        return clip_to_bounds(x, step * _bcast(eps, x), config.bounds).detach()

    if config.random_start:
        delta = random_in_ball(x, eps, config.norm, generator)
    elif config.objective == "deviation":
        v = top_singular_direction(model, x, iterations=config.steps, generator=generator,
                                   name=name)
        delta = v * _bcast(eps, x) if config.norm == "l2" else v.sign() * _bcast(eps, x)
    else:
        delta = torch.zeros_like(x)
    delta = clip_to_bounds(x, delta, config.bounds)
    alpha = _bcast(config.step_size_for(eps), x)
    best = delta.clone()
    best_loss = torch.full((x.shape[0],), -math.inf, device=x.device, dtype=x.dtype)
    for _ in range(config.steps):
        loss, grad = _input_gradient(model, x, delta, y_clean, config.objective, name)
        better = loss > best_loss
        best = torch.where(_bcast(better, x), delta, best)
        best_loss = torch.where(better, loss, best_loss)
        delta = project(delta + alpha * _ascent_direction(grad, config.norm), eps, config.norm)
        delta = clip_to_bounds(x, delta, config.bounds)
    with torch.no_grad():
        loss = adversarial_loss(forward(model, x + delta, name=name), y_clean, config.objective)
    return torch.where(_bcast(loss > best_loss, x), delta, best).detach()


def attack(
    model: nn.Module,
    x: torch.Tensor,
    *,
    eps: float | torch.Tensor,
    norm: Norm = "l2",
    objective: Objective = "deviation",
    solver: Solver = "pgd",
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    bounds: Bounds = (0.0, 1.0),
    generator: GeneratorLike = None,
    output: OutputSelector | None = None,
) -> torch.Tensor:
    """The adversarial perturbation delta_{f,eps}(x) (see the module docstring for the maths).

    Args:
        model: any ``nn.Module``; it is put in eval mode for the attack and left exactly as it
            was (mode, ``requires_grad`` flags, ``.grad``, device).
        x: a batch of inputs (batch, ...), float32 or float64, on the model's device.
        eps: the budget ||delta||_p <= eps, a float or one value per sample.
        norm: ``"l2"`` or ``"linf"``.
        objective: ``"deviation"`` (||f(x+delta) - f(x)||^2) or ``"ce"``.
        solver: ``"pgd"`` or ``"first_order"``.
        steps: PGD iterations (FGSM is 1), or power iterations for ``first_order``.
        step_size: PGD step size; default eps for one step, else 2 * eps (deviation) or
            2.5 * eps / steps (ce).
        random_start: PGD starts uniformly inside the eps-ball.
        bounds: the input domain (low, high) that x + delta must stay in, or None.
        generator: a ``torch.Generator`` or an int seed for the random start and power
            iteration; the same generator state gives the same delta.
        output: which tensor of a tuple/mapping/object output is the model's output (an int
            index, a str key or attribute, or a callable); None: the default selection of
            :func:`advtransfer.models.adapters.as_output`.

    Returns:
        delta with x's shape, dtype and device; x is not modified.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(4, 2, bias=False)
        >>> x = torch.rand(3, 4)
        >>> delta = attack(model, x, eps=0.1, bounds=None, generator=0)
        >>> bool((delta.norm(dim=1) <= 0.1 + 1e-6).all())
        True
    """
    config = AttackConfig(eps=eps, norm=norm, objective=objective, solver=solver, steps=steps,
                          step_size=step_size, random_start=random_start, bounds=bounds)
    x = validate_inputs(x, config.bounds)
    gen = as_generator(generator)
    model = select_output(model, output)
    with frozen(model):
        return run_attack(model, x, config, gen)


def validate_inputs(x: object, bounds: Bounds) -> torch.Tensor:
    """Check that x is a non-empty floating tensor with a batch dimension inside ``bounds``."""
    if not isinstance(x, torch.Tensor):
        raise AdvTransferTypeError(f"x must be a torch.Tensor; got {type(x).__name__}")
    if not x.is_floating_point():
        raise AdvTransferTypeError(f"x must be a floating-point tensor; got dtype {x.dtype}")
    if x.ndim < 1 or x.shape[0] == 0:
        raise AdvTransferError(f"x must be a non-empty batch (batch, ...); got shape "
                               f"{tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise AdvTransferError("x contains NaN or inf; inputs must be finite")
    check_bounds(x, bounds)
    return x
