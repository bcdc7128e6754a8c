"""Adversarial attacks in input space: PGD (FGSM = one step) and the first-order solver.

The attack on a model f at x is (docs/design.md §2, the paper's delta_{f,eps}(x))

    delta_{f,eps}(x) = argmax_{||delta||_p <= eps, x + delta in bounds} l_adv(f(x), f(x + delta))

with ``objective="deviation"`` (the theory's, label-free):  l_adv = ||f(x + delta) - f(x)||_2^2,
or ``objective="ce"``: cross-entropy of f(x + delta) against f's own clean prediction argmax f(x).

Solvers
-------
``pgd``
    Projected gradient ascent: delta <- Proj(delta + a * g / ||g||_2) for p = 2 and
    delta <- Proj(delta + a * sign(g)) for p = inf, then x + delta is clamped into ``bounds``.
    ``random_start`` draws delta uniformly inside the eps-ball. ``iterate="best"`` (default)
    returns the iterate with the largest loss (the start included), which costs one more forward
    pass to score the final iterate; ``iterate="last"`` returns the final iterate, as the
    authors' ``image_exp/attack.py`` does (with a random start, a one-step attack's final iterate
    can score lower than its start, and then the two differ). FGSM is
    ``steps=1, random_start=False``. Default step size
    a = eps for one step; else 2 * eps for ``deviation`` (a large step then the projection is a
    damped power iteration on J^T J; smaller steps converge measurably slower) and
    2.5 * eps / steps for ``ce`` (Madry et al. 2018). With the deviation objective
    the gradient vanishes at delta = 0, so ``random_start=False`` starts from the first-order
    solution instead of 0, and a sample stops once the relative change of its l_adv between
    iterates is <= ``tol`` (at most ``steps`` iterations, default 100); ``ce`` runs exactly
    ``steps`` (default 10).
``first_order``
    The maximiser of the objective's lowest-order Taylor model. For ``deviation`` that is
    delta = eps * v1(J_f(x)), v1 the top right singular vector of the Jacobian: exactly, from
    the k x n Jacobian (k backward passes), for models with k <= 64 outputs and k n <= 2^21;
    else by power iteration on J^T J with Jacobian-vector products (one forward pass, two
    backward passes per iteration, batched over samples) until the relative change of the
    Rayleigh quotient ||J v||^2 is <= ``tol`` (at most ``steps``, default 100). Exact for p = 2
    as eps -> 0, and eps * sign(v1) for p = inf (a heuristic: the Linf problem has no closed
    form). For ``ce`` it is the normalised gradient step eps * g / ||g||_2 (p = 2) or
    eps * sign(g) (p = inf).

    Power iteration converges slowly when the top singular pair is close: on tanh nets with
    median sigma_2 / sigma_1 = 0.95 it reached 75% of samples within 100 iterations, and the
    alphas were 1.3% (alpha1) and 2.6% (alpha2) off the exact values (0.1% with steps=300,
    tol=1e-8). Where the pair is nearly degenerate (ratio > 0.99) the Rayleigh quotient can
    settle on v2 before v1 emerges, so a sample may meet ``tol`` with the wrong direction; the
    deviation ||J v|| is then within 1% of sigma_1 but alpha2 may differ. Samples that hit the
    cap are counted in ``AttackStats.fraction_converged``.

Every attack reports per sample how many iterations it used and whether ``tol`` was met
(:class:`AttackOutput`); the metrics carry the summary in ``AttackStats``.

Models must treat samples independently (eval mode; no batch statistics): a sample's attack in a
batch then equals its attack alone.
"""

from __future__ import annotations

import enum
import math
import warnings
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Literal, TypedDict

import torch
import torch.nn.functional as F
from torch import nn

from advtransfer.errors import AdvTransferError, AdvTransferTypeError
from advtransfer.models.adapters import OutputSelector, forward, frozen, select_output

if TYPE_CHECKING:
    from typing_extensions import Unpack

Norm = Literal["l2", "linf"]
Objective = Literal["deviation", "ce"]
Solver = Literal["pgd", "first_order"]
Iterate = Literal["best", "last"]
Bounds = tuple[float, float] | None
GeneratorLike = torch.Generator | int | None

DEFAULT_TOL = 1e-6
DEFAULT_DEVIATION_STEPS = 100
DEFAULT_CE_STEPS = 10
# Up to this many outputs (and Jacobian entries per sample) the first-order direction comes from
# the exact Jacobian (k backward passes) instead of power iteration (two passes per iteration).
EXACT_MAX_OUTPUTS = 64
EXACT_MAX_ENTRIES = 1 << 21

NORMS = ("l2", "linf")
OBJECTIVES = ("deviation", "ce")
SOLVERS = ("pgd", "first_order")
ITERATES = ("best", "last")
_BOUNDS_TOL = 1e-6


@dataclass(frozen=True)
class AttackConfig:
    """Validated attack settings; one configuration serves every model (the model is an argument
    of each call). Pass it as ``attack=`` to :func:`attack`, :func:`advtransfer.transferability`
    and :func:`advtransfer.transfer_matrix` (or give its fields there as keyword arguments).
    ``eps`` is a positive float or a per-sample tensor of shape (batch,).
    ``steps=None`` is resolved to :func:`default_steps` (the field then holds the number);
    ``tol`` is the relative change of the objective that stops a sample and ``iterate`` which
    PGD iterate is returned (see :func:`attack`)."""

    eps: float | torch.Tensor
    norm: Norm = "l2"
    objective: Objective = "deviation"
    solver: Solver = "pgd"
    steps: int | None = None
    step_size: float | None = None
    random_start: bool = True
    bounds: Bounds = (0.0, 1.0)
    tol: float = DEFAULT_TOL
    iterate: Iterate = "best"
    #: Rows along the last dimension that are exactly zero in the clean input (the padding of an
    #: embedded sequence, [batch, length, dim]) are never perturbed: the attack acts in the
    #: subspace of the other rows (its gradients, Jacobian and random draws are masked), so an
    #: L2 budget is per sequence over its tokens and padding stays padding.
    mask_padding: bool = False

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
        _choice("iterate", self.iterate, ITERATES)
        if not isinstance(self.mask_padding, bool):
            raise AdvTransferTypeError(f"mask_padding must be True or False; got "
                                       f"{self.mask_padding!r}")
        if self.steps is None:
            object.__setattr__(self, "steps", default_steps(self.objective))
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise AdvTransferError(f"steps must be None or an integer >= 1; got {self.steps!r}")
        if not (isinstance(self.tol, (int, float)) and not isinstance(self.tol, bool)
                and 0 <= self.tol < 1):
            raise AdvTransferError(f"tol must be a number in [0, 1); got {self.tol!r}")
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

    def key(self) -> dict[str, Any]:
        """Every field, defaults included and ``steps`` resolved, as JSON values: what a stored
        unit computed with this attack puts in its key (:func:`advtransfer.units.unit_key`),
        so that no setting that changes the attack can be left out of it."""
        eps = self.eps.tolist() if isinstance(self.eps, torch.Tensor) else float(self.eps)
        return {f.name: getattr(self, f.name) for f in fields(self)} | {
            "eps": eps, "bounds": None if self.bounds is None else list(self.bounds)}

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


def default_steps(objective: Objective) -> int:
    """The iteration cap when ``steps=None``: 100 for the deviation objective (PGD and the power
    iteration stop earlier once ``tol`` is met), 10 PGD steps for ``ce`` (Madry et al. 2018)."""
    return DEFAULT_DEVIATION_STEPS if objective == "deviation" else DEFAULT_CE_STEPS


def _choice(name: str, value: object, accepted: tuple[str, ...]) -> None:
    if value not in accepted:
        raise AdvTransferError(f"{name} must be one of {', '.join(map(repr, accepted))}; "
                               f"got {value!r}")


def as_generator(generator: GeneratorLike, name: str = "generator") -> torch.Generator | None:
    """A ``torch.Generator`` from a generator (used as is), an integer seed (a fresh generator
    seeded with it) or None (the global RNG); ``name`` is the parameter named in the error."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, int) and not isinstance(generator, bool):
        return torch.Generator().manual_seed(generator)
    raise AdvTransferTypeError(f"{name} must be a torch.Generator, an int seed or None; "
                               f"got {type(generator).__name__}")


class NotGiven(enum.Enum):
    """The default of a deprecated keyword: tells "not passed" apart from an explicit None."""

    NOT_GIVEN = "NOT_GIVEN"

    def __repr__(self) -> str:
        return "<not given>"


NOT_GIVEN = NotGiven.NOT_GIVEN


def resolve_seed(seed: GeneratorLike, generator: GeneratorLike | NotGiven = NOT_GIVEN, *,
                 stacklevel: int = 3) -> torch.Generator | None:
    """The generator of a public function's ``seed=`` (:func:`as_generator`: an int seeds a
    fresh ``torch.Generator``, a generator is used as is, None is the global RNG).

    ``generator=`` is the former name of ``seed=``, accepted for one release: when given (even
    as None) it emits a ``FutureWarning`` (attributed ``stacklevel`` frames up: the caller of
    the public function) and is used as the seed; given together with a non-None ``seed`` it
    is an :class:`AdvTransferError`. The one place :func:`advtransfer.attack`,
    :func:`advtransfer.transferability` and :func:`advtransfer.transfer_matrix` handle it."""
    if generator is NOT_GIVEN:
        return as_generator(seed, "seed")
    if seed is not None:
        raise AdvTransferError("seed= and generator= were both given; pass only seed= "
                               "(generator= is its deprecated former name)")
    warnings.warn("advtransfer: generator= is deprecated; pass seed= instead (same meaning: an "
                  "int seed, a torch.Generator or None); generator= will be removed in the next "
                  "release", FutureWarning, stacklevel=stacklevel)
    return as_generator(generator, "generator")


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


def padding_mask(x: torch.Tensor) -> torch.Tensor:
    """1 where a row along x's last dimension has a non-zero entry, 0 where the row is exactly
    zero (padding), shaped to broadcast against x (:attr:`AttackConfig.mask_padding`)."""
    return (x.abs().amax(dim=-1, keepdim=True) > 0).to(x.dtype)


def masked(v: torch.Tensor, x: torch.Tensor, mask_padding: bool) -> torch.Tensor:
    """``v`` with the padding rows of the clean input ``x`` set to zero when ``mask_padding``
    (a vector of the input space restricted to the tokens: J diag(m) for a gradient)."""
    return v * padding_mask(x) if mask_padding else v


def random_in_ball(x: torch.Tensor, eps: torch.Tensor, norm: Norm,
                   generator: torch.Generator | None, *,
                   mask_padding: bool = False) -> torch.Tensor:
    """Uniform samples inside each sample's eps-ball (radius eps * U^(1/n) for p = 2, n the
    number of free coordinates: those outside the padding with ``mask_padding``)."""
    if norm == "linf":
        return masked((2 * _rand(x.shape, x, generator) - 1) * _bcast(eps, x), x, mask_padding)
    direction = _unit(masked(_randn(x.shape, x, generator), x, mask_padding))
    n = masked(torch.ones_like(x), x, mask_padding).flatten(1).sum(dim=1).clamp_min(1)
    radius = eps * _rand(eps.shape, x, generator) ** (1.0 / n)
    return direction * _bcast(radius, x)


def random_on_sphere(x: torch.Tensor, eps: torch.Tensor, norm: Norm,
                     generator: torch.Generator | None, *,
                     mask_padding: bool = False) -> torch.Tensor:
    """Random noise of norm exactly eps: a uniform direction for p = 2, random signs for p = inf
    (the same-norm random baseline an attack must beat); zero on the padding rows with
    ``mask_padding``."""
    if norm == "linf":
        signs = torch.where(_rand(x.shape, x, generator) < 0.5, -1.0, 1.0).to(x.dtype)
        return masked(signs * _bcast(eps, x), x, mask_padding)
    return _unit(masked(_randn(x.shape, x, generator), x, mask_padding)) * _bcast(eps, x)


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


@dataclass(frozen=True)
class AttackOutput:
    """An attack's perturbation with its per-sample convergence report.

    ``iterations`` counts power iterations (first-order solver; 0 when v1 comes from the exact
    Jacobian) or PGD gradient evaluations. ``converged`` says whether the relative change of the
    objective between the last two iterates was <= ``tol``; None for the fixed-step attacks
    (objective ``"ce"``), which have no tolerance. ``clean`` is f(x) when the attack computed it
    itself in its first forward pass (the one-step ``ce`` attack, FGSM, when no ``y_clean`` was
    given), so callers need no separate clean pass; None otherwise.
    """

    delta: torch.Tensor
    iterations: torch.Tensor
    converged: torch.Tensor | None
    clean: torch.Tensor | None = None


class ConvergenceLog:
    """Streaming summary of :class:`AttackOutput` reports over batches."""

    def __init__(self) -> None:
        self._iterations = 0.0
        self._converged = 0
        self._assessed = 0
        self._n = 0

    def update(self, out: AttackOutput) -> None:
        self._iterations += float(out.iterations.double().sum())
        self._n += out.iterations.numel()
        if out.converged is not None:
            self._converged += int(out.converged.sum())
            self._assessed += out.converged.numel()

    @property
    def mean_iterations(self) -> float:
        return self._iterations / self._n if self._n else math.nan

    @property
    def fraction_converged(self) -> float:
        return self._converged / self._assessed if self._assessed else math.nan


def _start_direction(y: torch.Tensor, xg: torch.Tensor, x: torch.Tensor,
                     generator: torch.Generator | None, mask_padding: bool) -> torch.Tensor:
    """J^T 1 normalised (so a sample's direction does not depend on its batch), random where
    that vanishes."""
    (start,) = torch.autograd.grad(y, xg, torch.ones_like(y), retain_graph=True)
    start = masked(start, x, mask_padding)
    return torch.where(_bcast(norms(start, "l2") > 0, x), _unit(start),
                       _unit(masked(_randn(x.shape, x, generator), x, mask_padding)))


def _exact_direction(y: torch.Tensor, xg: torch.Tensor, start: torch.Tensor,
                     mask_padding: bool) -> torch.Tensor:
    """v1 from the per-sample Jacobian J (k backward passes): the top eigenvector u1 of the k x k
    Gram matrix J J^T gives v1 = J^T u1 / ||J^T u1||, signed so that <v1, J^T 1> >= 0 (J
    restricted to the tokens, J diag(m), with ``mask_padding``)."""
    jac = jacobian_rows(y, xg)
    if mask_padding:
        jac = jac * padding_mask(xg.detach()).expand_as(xg).reshape(xg.shape[0], 1, -1)
    _, vecs = torch.linalg.eigh((jac @ jac.transpose(1, 2)).double())
    v = torch.einsum("bkn,bk->bn", jac, vecs[:, :, -1].to(jac.dtype))
    v = v * torch.where((v * start.reshape(v.shape)).sum(dim=1) < 0, -1.0, 1.0)[:, None]
    v = _unit(v).reshape(start.shape)
    return torch.where(_bcast(norms(v, "l2") > 0, start), v, start)


def jacobian_rows(y: torch.Tensor, xg: torch.Tensor) -> torch.Tensor:
    """Per-sample Jacobians (batch, k, n) of y (batch, k) w.r.t. xg by one backward pass per
    output (samples must be independent); rows of outputs that do not depend on xg are 0."""
    rows = []
    for j in range(y.shape[1]):
        (g,) = torch.autograd.grad(y[:, j].sum(), xg, retain_graph=True, allow_unused=True)
        rows.append(torch.zeros_like(xg) if g is None else g)
    return torch.stack([r.reshape(r.shape[0], -1) for r in rows], dim=1)


def use_exact_jacobian(k: int, n: int) -> bool:
    """Whether the first-order direction comes from the exact Jacobian: k <= 64 outputs and at
    most 2^21 Jacobian entries per sample (per-sample sizes only, so the choice never depends on
    the batch)."""
    return k <= EXACT_MAX_OUTPUTS and k * n <= EXACT_MAX_ENTRIES


def top_singular_direction(model: nn.Module, x: torch.Tensor, *, iterations: int,
                           generator: torch.Generator | None, name: str = "model",
                           tol: float = DEFAULT_TOL, mask_padding: bool = False
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unit vectors v1(J_f(x)) per sample (shape of x), with the per-sample number of power
    iterations used and whether ``tol`` was met.

    When :func:`use_exact_jacobian`: v1 exactly, from the Jacobian (0 iterations). Otherwise
    power iteration on J^T J from J^T 1 (random only where that is 0), so a sample's result
    does not depend on its batch: J v is a Jacobian-vector product obtained by differentiating
    the vector-Jacobian product J^T u with respect to u (the double-backward trick), so one
    forward pass serves every iteration. A sample stops once the relative change of its
    Rayleigh quotient ||J v||^2 between iterates is <= ``tol``, or after ``iterations``. The
    model must already be frozen. With ``mask_padding`` J is restricted to the rows of x that
    are not padding (J diag(m), :func:`padding_mask`).
    """
    n = x.shape[0]
    zero = torch.zeros(n, dtype=torch.long, device=x.device)
    done = torch.ones(n, dtype=torch.bool, device=x.device)
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad():
        y = forward(model, xg, name=name)
        if not y.requires_grad:  # the output does not depend on the input: J = 0
            return _unit(masked(_randn(x.shape, x, generator), x, mask_padding)), zero, done
        v = _start_direction(y, xg, x, generator, mask_padding)
        if use_exact_jacobian(y.shape[1], x[0].numel()):
            return _exact_direction(y, xg, v, mask_padding).detach(), zero, done
        u = torch.zeros_like(y, requires_grad=True)
        (jt_u,) = torch.autograd.grad(y, xg, u, create_graph=True)
    return _power_iteration(y, xg, u, jt_u, v, iterations, tol,
                            padding_mask(x) if mask_padding else None)


def _power_iteration(y: torch.Tensor, xg: torch.Tensor, u: torch.Tensor, jt_u: torch.Tensor,
                     v: torch.Tensor, iterations: int, tol: float, mask: torch.Tensor | None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n = v.shape[0]
    used = torch.zeros(n, dtype=torch.long, device=v.device)
    done = torch.zeros(n, dtype=torch.bool, device=v.device)
    rho_prev = torch.full((n,), math.nan, dtype=v.dtype, device=v.device)
    for i in range(iterations + 1):
        (jv,) = torch.autograd.grad(jt_u, u, v, retain_graph=True)
        rho = jv.flatten(1).pow(2).sum(dim=1)  # Rayleigh quotient of J^T J at v
        done |= (rho - rho_prev).abs() <= tol * rho
        rho_prev = rho
        if bool(done.all()) or i == iterations:
            break
        (w,) = torch.autograd.grad(y, xg, jv, retain_graph=True)
        w = w if mask is None else w * mask
        step = ~done & (norms(w, "l2") > 0)
        v = torch.where(_bcast(step, w), _unit(w), v)
        used += (~done).long()
    return v.detach(), used, done


def _input_gradient(model: nn.Module, x: torch.Tensor, delta: torch.Tensor,
                    y_clean: torch.Tensor, objective: Objective,
                    name: str, mask_padding: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-sample loss, gradient of the summed loss w.r.t. delta) at x + delta (zero on the
    padding rows of x with ``mask_padding``)."""
    d = delta.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = adversarial_loss(forward(model, x + d, name=name), y_clean, objective)
        (grad,) = torch.autograd.grad(loss.sum(), d)
    return loss.detach(), masked(grad, x, mask_padding)


def _ascent_direction(grad: torch.Tensor, norm: Norm) -> torch.Tensor:
    return _unit(grad) if norm == "l2" else grad.sign()


def run_attack(model: nn.Module, x: torch.Tensor, config: AttackConfig,
               generator: torch.Generator | None, *, name: str = "model",
               y_clean: torch.Tensor | None = None) -> AttackOutput:
    """The attack for an already validated configuration and frozen model, with its convergence
    report (internal form of :func:`attack`; ``y_clean`` may pass the clean output f(x) when the
    caller has it)."""
    eps = per_sample_eps(config.eps, x)
    pad = config.mask_padding
    if y_clean is None and gives_clean(config):
        return _fgsm(model, x, eps, config, name)
    if y_clean is None:
        with torch.no_grad():
            y_clean = forward(model, x, name=name)
    y_clean = y_clean.detach()
    n = x.shape[0]

    if config.solver == "first_order":
        if config.objective == "deviation":
            v, used, done = top_singular_direction(model, x, iterations=config.steps,
                                                   generator=generator, name=name,
                                                   tol=config.tol, mask_padding=pad)
            step = v if config.norm == "l2" else v.sign()
        else:
            _, grad = _input_gradient(model, x, torch.zeros_like(x), y_clean, "ce", name, pad)
            step = _ascent_direction(grad, config.norm)
            used, done = torch.ones(n, dtype=torch.long, device=x.device), None
        delta = clip_to_bounds(x, step * _bcast(eps, x), config.bounds).detach()
        return AttackOutput(delta, used, done)

    if config.random_start:
        delta = random_in_ball(x, eps, config.norm, generator, mask_padding=pad)
    elif config.objective == "deviation":
        v, _, _ = top_singular_direction(model, x, iterations=DEFAULT_DEVIATION_STEPS,
                                         generator=generator, name=name, tol=config.tol,
                                         mask_padding=pad)
        delta = v * _bcast(eps, x) if config.norm == "l2" else v.sign() * _bcast(eps, x)
    else:
        delta = torch.zeros_like(x)
    delta = clip_to_bounds(x, delta, config.bounds)
    return _pgd(model, x, delta, eps, y_clean, config, name)


def gives_clean(config: AttackConfig) -> bool:
    """Whether :func:`run_attack` without ``y_clean`` returns f(x) in ``AttackOutput.clean``:
    the one-step ``ce`` attack (FGSM) reads the label argmax f(x) from the same forward pass
    whose gradient it follows, as the authors' FGSM does."""
    return config.solver == "first_order" and config.objective == "ce"


def _fgsm(model: nn.Module, x: torch.Tensor, eps: torch.Tensor, config: AttackConfig,
          name: str) -> AttackOutput:
    """One signed (linf) or normalised (l2) step of CE(f(x + d), argmax f(x)) at d = 0: a
    single forward and backward, the forward's output being the clean f(x)."""
    d = torch.zeros_like(x).requires_grad_(True)
    with torch.enable_grad():
        y = forward(model, x + d, name=name)
        loss = adversarial_loss(y, y.detach(), "ce")
        (grad,) = torch.autograd.grad(loss.sum(), d)
    step = masked(_ascent_direction(grad, config.norm), x, config.mask_padding)
    delta = clip_to_bounds(x, step * _bcast(eps, x), config.bounds).detach()
    used = torch.ones(x.shape[0], dtype=torch.long, device=x.device)
    return AttackOutput(delta, used, None, clean=y.detach())


def _pgd(model: nn.Module, x: torch.Tensor, delta: torch.Tensor, eps: torch.Tensor,
         y_clean: torch.Tensor, config: AttackConfig, name: str) -> AttackOutput:
    """PGD from ``delta``; with the deviation objective a sample stops once the relative change
    of its loss between iterates is <= ``tol`` (the others go on without it: samples are
    independent). Returns the best-scoring iterate, or the final one for ``iterate="last"``
    (each sample's last iterate: where it stopped, or after ``steps`` steps)."""
    n = x.shape[0]
    early_stop = config.objective == "deviation"
    alpha = _bcast(config.step_size_for(eps), x)
    keep_best = config.iterate == "best"
    best = delta.clone()
    best_loss = torch.full((n,), -math.inf, device=x.device, dtype=x.dtype)
    prev = torch.full((n,), math.nan, device=x.device, dtype=x.dtype)
    used = torch.zeros(n, dtype=torch.long, device=x.device)
    done = torch.zeros(n, dtype=torch.bool, device=x.device)
    idx = torch.arange(n, device=x.device)
    for _ in range(config.steps):
        loss, grad = _input_gradient(model, x[idx], delta[idx], y_clean[idx], config.objective,
                                     name, config.mask_padding)
        used[idx] += 1
        if keep_best:
            better = loss > best_loss[idx]
            best[idx] = torch.where(_bcast(better, grad), delta[idx], best[idx])
            best_loss[idx] = torch.where(better, loss, best_loss[idx])
        if early_stop:
            done[idx] = (loss - prev[idx]).abs() <= config.tol * loss
            prev[idx] = loss
        moving = ~done[idx]
        idx, grad = idx[moving], grad[moving]
        if idx.numel() == 0:
            break
        step = delta[idx] + alpha[idx] * _ascent_direction(grad, config.norm)
        delta[idx] = clip_to_bounds(x[idx], project(step, eps[idx], config.norm), config.bounds)
    if config.iterate == "last":
        return AttackOutput(delta.detach(), used, done if early_stop else None)
    if idx.numel():
        with torch.no_grad():
            loss = adversarial_loss(forward(model, x[idx] + delta[idx], name=name), y_clean[idx],
                                    config.objective)
        better = loss > best_loss[idx]
        best[idx] = torch.where(_bcast(better, best[idx]), delta[idx], best[idx])
    return AttackOutput(best.detach(), used, done if early_stop else None)


class AttackKeywords(TypedDict, total=False):
    """The attack settings as keyword arguments (the fields of :class:`AttackConfig`), accepted
    by :func:`attack`, :func:`advtransfer.transferability` and
    :func:`advtransfer.transfer_matrix` instead of ``attack=AttackConfig(...)``."""

    eps: float | torch.Tensor
    norm: Norm
    objective: Objective
    solver: Solver
    steps: int | None
    step_size: float | None
    random_start: bool
    bounds: Bounds
    tol: float
    iterate: Iterate
    mask_padding: bool


ATTACK_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(AttackConfig))
"""The names of :class:`AttackConfig`'s fields (= the keys of :class:`AttackKeywords`)."""


def resolve_attack(attack: AttackConfig | None, keywords: AttackKeywords) -> AttackConfig:
    """The one :class:`AttackConfig` of a call: ``attack`` itself, or the configuration the
    keyword arguments ``keywords`` describe (the fields not given at :class:`AttackConfig`'s
    defaults).

    Raises:
        AdvTransferTypeError: ``attack`` is not an AttackConfig, or a keyword is not an attack
            setting (the message lists the accepted ones).
        AdvTransferError: both ``attack`` and attack keywords are given (the message names
            them), or neither gives ``eps``.
    """
    unknown = sorted(set(keywords) - set(ATTACK_FIELDS))
    if unknown:
        raise AdvTransferTypeError(f"unexpected keyword argument(s) {', '.join(unknown)}; the "
                                   f"attack settings are {', '.join(ATTACK_FIELDS)}")
    if attack is None:
        if "eps" not in keywords:
            raise AdvTransferError("the attack budget is missing: pass eps=... (and the other "
                                   "attack keywords) or attack=AttackConfig(eps=...)")
        return AttackConfig(**keywords)
    if not isinstance(attack, AttackConfig):
        raise AdvTransferTypeError(f"attack must be an advtransfer.attacks.AttackConfig or None; "
                                   f"got {type(attack).__name__}")
    if keywords:
        raise AdvTransferError(f"attack= and the attack keyword(s) {', '.join(sorted(keywords))} "
                               "were both given; pass the settings either as "
                               "attack=AttackConfig(...) or as keywords, not both")
    return attack


def attack(
    model: nn.Module,
    x: torch.Tensor,
    *,
    attack: AttackConfig | None = None,
    seed: GeneratorLike = None,
    output: OutputSelector | None = None,
    generator: GeneratorLike | NotGiven = NOT_GIVEN,
    **keywords: Unpack[AttackKeywords],
) -> torch.Tensor:
    """The adversarial perturbation delta_{f,eps}(x) (see the module docstring for the maths).

    The attack settings are given either as ``attack=AttackConfig(...)`` or as the keyword
    arguments below (the fields of :class:`AttackConfig`, same names and defaults), not both.

    Args:
        model: any ``nn.Module``; it is put in eval mode for the attack and left exactly as it
            was (mode, ``requires_grad`` flags, ``.grad``, device).
        x: a batch of inputs (batch, ...), float32 or float64, on the model's device.
        attack: all attack settings at once, as an :class:`AttackConfig`.
        seed: an int seed (a fresh ``torch.Generator`` seeded with it), a ``torch.Generator``
            (used as is) or None (the global RNG) for the random start and power iteration;
            the same seed or generator state gives the same delta.
        output: which tensor of a tuple/mapping/object output is the model's output (an int
            index, a str key or attribute, or a callable); None: the default selection of
            :func:`advtransfer.models.adapters.as_output`.
        eps: the budget ||delta||_p <= eps, a float or one value per sample (required unless
            ``attack`` is given).
        norm: ``"l2"`` (default) or ``"linf"``.
        objective: ``"deviation"`` (||f(x+delta) - f(x)||^2, default) or ``"ce"``.
        solver: ``"pgd"`` (default) or ``"first_order"``.
        steps: the cap on PGD iterations (FGSM is 1) or on power iterations for
            ``first_order``; None (default): 100 for the deviation objective, 10 for ``ce``.
        step_size: PGD step size; default eps for one step, else 2 * eps (deviation) or
            2.5 * eps / steps (ce).
        random_start: PGD starts uniformly inside the eps-ball (default True).
        bounds: the input domain (low, high) that x + delta must stay in, or None; default
            (0, 1).
        tol: with the deviation objective a sample's iterations stop once the relative change
            of the objective between iterates is <= tol (PGD: l_adv; power iteration: the
            Rayleigh quotient ||J v||^2); 0 stops only where the objective does not change at
            all; default 1e-6. ``ce`` always runs ``steps``.
        iterate: which PGD iterate is returned: ``"best"`` (default), the one with the largest
            loss, the start included; ``"last"``, the final one, as the authors' code (one
            forward pass fewer). Ignored by ``first_order``.
        generator: the deprecated former name of ``seed`` (a ``FutureWarning``; see
            :func:`resolve_seed`).

    Returns:
        delta with x's shape, dtype and device; x is not modified.

    Raises:
        AdvTransferError: both ``attack`` and attack keywords, both ``seed`` and
            ``generator``, no ``eps``, or a setting out of its range.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(4, 2, bias=False)
        >>> x = torch.rand(3, 4)
        >>> delta = attack(model, x, eps=0.1, bounds=None, seed=0)
        >>> bool((delta.norm(dim=1) <= 0.1 + 1e-6).all())
        True
        >>> config = AttackConfig(eps=0.1, bounds=None)
        >>> bool(torch.equal(attack(model, x, attack=config, seed=0), delta))
        True
    """
    gen = resolve_seed(seed, generator)
    config = resolve_attack(attack, keywords)
    x = validate_inputs(x, config.bounds)
    model = select_output(model, output)
    with frozen(model):
        return run_attack(model, x, config, gen).delta


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
