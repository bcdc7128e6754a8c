"""Adversarial transferability: alpha1, alpha2 and their combination (docs/design.md §2).

For an attacker A and a victim B, with delta_A = delta_{f_A,eps}(x) the attack crafted on A,

    Delta_{A->B}(x) = f_B(x + delta_A(x)) - f_B(x),   u_{A->B} = Delta_{A->B} / ||Delta_{A->B}||

    alpha1^{A->B}(x) = ||Delta_{A->B}(x)|| / ||Delta_{B->B}(x)||     (per sample; mean reported)
    alpha2^{A->B}    = || E_x[ u_{A->A}(x) u_{A->B}(x)^T ] ||_F             (in [0, 1])
    combined^{A->B}  = || E_x[ alpha1^{A->B}(x) u_{A->A}(x) u_{A->B}(x)^T ] ||_F

Samples where B does not move under its own attack (||Delta_{B->B}(x)|| = 0) have no alpha1; they
are left out of all three quantities (one sample set), counted in ``n_undefined``.

Reporting conventions (``convention=``), one code path for the library, the CLI and every recipe:

* ``"icml"`` (default): the definitions above, all unsquared (alpha2 and combined as the ICML 2021
  paper defines them; for its alpha1 see ``alpha1_ladv`` below).
* ``"authors"``: the authors' image code (image_exp/adv2know.py): alpha1 the mean unsquared ratio,
  alpha2 = ||E[u_{A->A} u_{A->B}^T]||_F^2 and combined = ||E[alpha1(x) u_{A->A} u_{A->B}^T]||_F^2,
  both squared, with the unsquared per-sample alpha1 inside combined.

In both conventions the headline ``alpha1`` is E_x of the unsquared ratio of deviation norms
above, as the authors' image code computes it. The ICML paper defines alpha1 as a ratio of l_adv
values: that is ``alpha1_ladv`` = E_x[ l_adv(f_B(x), f_B(x + delta_A)) / l_adv(f_B(x), f_B(x +
delta_B)) ] = E_x[alpha1(x)^2] for the deviation loss l_adv = ||.||^2, reported beside it (0.579
beside an alpha1 of 0.666 on one case: the two differ, the mean of squares is not the square of
the mean). ``alpha1_median`` is the median of the per-sample unsquared ratio. PGD is approximate, so
alpha1 may exceed 1: values are never clipped, and their count is reported.

Both directions use the same two attacks (on S and on T), so one measurement returns both; in a
matrix of N models each model is attacked once per sample (N attacks, not N^2).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np
import torch
from torch import nn

from advtransfer.attacks import (
    NOT_GIVEN,
    AttackConfig,
    AttackKeywords,
    ConvergenceLog,
    GeneratorLike,
    NotGiven,
    as_generator,
    check_bounds,
    clip_to_bounds,
    gives_clean,
    norms,
    per_sample_eps,
    random_on_sphere,
    resolve_attack,
    resolve_seed,
    run_attack,
)
from advtransfer.data.batches import DataLike, iter_inputs
from advtransfer.devices import resolve_device  # also importable from here (public before)
from advtransfer.errors import AdvTransferError, AdvTransferTypeError
from advtransfer.models.adapters import (
    OutputSelector,
    check_module,
    forward,
    frozen,
    select_output,
)
from advtransfer.progress import track

if TYPE_CHECKING:
    from typing_extensions import Unpack

# Above this many entries of E[u_A u_B^T] the accumulator keeps the unit vectors instead and
# computes the Frobenius norm from Gram matrices: ||E[a b^T]||_F^2 = mean_{x,x'} <a,a'><b,b'>.
_MAX_OUTER_ENTRIES = 1 << 22

Convention = Literal["icml", "authors"]
CONVENTIONS: tuple[str, ...] = get_args(Convention)


def check_convention(convention: str) -> Convention:
    """``convention`` itself, or an :class:`AdvTransferError` naming the accepted values."""
    if convention not in CONVENTIONS:
        raise AdvTransferError(f"convention must be one of {', '.join(map(repr, CONVENTIONS))} "
                               f"('icml': unsquared alpha2 and combined, the paper's definitions; "
                               f"'authors': squared, as the authors' image code reports them); "
                               f"got {convention!r}")
    return convention  # type: ignore[return-value]


@dataclass(frozen=True)
class AttackStats:
    """What the attack on A did, seen from victim B (means over samples).

    ``mean_delta_norm`` is mean ||delta_A||_p; ``mean_deviation`` mean ||Delta_{A->B}||_2;
    ``mean_victim_self_deviation`` mean ||Delta_{B->B}||_2 (B's own attack);
    ``mean_random_deviation`` mean ||f_B(x + n) - f_B(x)||_2 for random noise n of norm eps, the
    baseline an attack that transfers must beat (NaN unless asked for with ``noise_baseline=True``:
    it costs one forward pass per model and sample). ``mean_iterations`` and ``fraction_converged``
    report how converged the attack on A was (:class:`advtransfer.attacks.AttackOutput`): mean
    iterations used per sample, and the share of samples that met ``tol`` (NaN for ``ce``
    attacks, which run a fixed number of steps).
    """

    mean_delta_norm: float
    mean_deviation: float
    mean_victim_self_deviation: float
    mean_random_deviation: float
    mean_iterations: float = math.nan
    fraction_converged: float = math.nan


@dataclass(frozen=True)
class DirectionResult:
    """alpha1, alpha2 and combined for attacks crafted on ``attacker`` and applied to ``victim``.

    ``alpha1`` is the mean of the unsquared per-sample ratio (``alpha1_per_sample``, NaN where
    undefined), ``alpha1_median`` its median, ``alpha1_ladv`` the mean squared ratio (the ICML
    paper's alpha1, a ratio of l_adv values); ``alpha2`` and ``combined`` follow
    ``convention`` (module docstring). All of them use the same ``n_samples - n_undefined``
    samples.
    """

    attacker: str
    victim: str
    alpha1: float
    alpha1_median: float
    alpha1_ladv: float
    alpha1_per_sample: np.ndarray = field(repr=False)
    alpha2: float
    combined: float
    n_alpha1_above_one: int
    n_samples: int
    n_undefined: int
    convention: Convention
    stats: AttackStats

    def alpha1_quantiles(self, q: Sequence[float] = (0.05, 0.25, 0.5, 0.75, 0.95)) -> dict:
        """Quantiles of the per-sample alpha1 distribution, keyed by q."""
        values = np.nanquantile(self.alpha1_per_sample, list(q))
        return {float(k): float(v) for k, v in zip(q, values, strict=True)}

    def to_dict(self, *, per_sample: bool = False) -> dict[str, Any]:
        """A JSON-ready dictionary (per-sample values only when asked)."""
        out = {k: v for k, v in asdict(self).items() if k != "alpha1_per_sample"}
        out["alpha1_quantiles"] = self.alpha1_quantiles()
        if per_sample:
            out["alpha1_per_sample"] = self.alpha1_per_sample.tolist()
        return out


@dataclass(frozen=True)
class TransferabilityResult:
    """Both directions of one source/target measurement."""

    source_to_target: DirectionResult
    target_to_source: DirectionResult
    config: dict[str, Any]

    def to_dict(self, *, per_sample: bool = False) -> dict[str, Any]:
        return {"source_to_target": self.source_to_target.to_dict(per_sample=per_sample),
                "target_to_source": self.target_to_source.to_dict(per_sample=per_sample),
                "config": self.config}


@dataclass(frozen=True)
class TransferMatrixResult:
    """N x N matrices; entry [i, j] is the transferability of attacks on model i to model j.

    The diagonal is each model with itself: alpha1 = 1 and alpha2 = ||E[u u^T]||_F."""

    names: tuple[str, ...]
    alpha1: np.ndarray
    alpha2: np.ndarray
    combined: np.ndarray
    n_alpha1_above_one: np.ndarray
    directions: dict[tuple[int, int], DirectionResult] = field(repr=False)
    config: dict[str, Any]

    def direction(self, attacker: int | str, victim: int | str) -> DirectionResult:
        index = {n: i for i, n in enumerate(self.names)}
        i = index[attacker] if isinstance(attacker, str) else attacker
        j = index[victim] if isinstance(victim, str) else victim
        return self.directions[(i, j)]

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "alpha1": self.alpha1.tolist(),
                "alpha2": self.alpha2.tolist(), "combined": self.combined.tolist(),
                "n_alpha1_above_one": self.n_alpha1_above_one.tolist(), "config": self.config}


def _unit_rows(d: torch.Tensor) -> torch.Tensor:
    n = d.norm(dim=1, keepdim=True)
    return torch.where(n > 0, d / n.clamp_min(torch.finfo(d.dtype).tiny), torch.zeros_like(d))


class DirectionAccumulator:
    """Streaming alpha1/alpha2/combined for one direction A -> B: ``update`` per batch, then
    ``compute``. Sums are kept in float64, so batching does not change the result beyond
    floating-point summation order.

    ``update`` takes Delta_{A->A} (batch, m_A), Delta_{A->B} (batch, m_B) and Delta_{B->B}
    (batch, m_B), plus ||delta_A||_p and B's deviation under random noise for the statistics.
    Delta_{A->A} may be None in every update (alpha1 only): alpha2 and combined are then NaN.
    """

    def __init__(self, attacker: str = "A", victim: str = "B", *,
                 convention: Convention = "icml") -> None:
        self.attacker, self.victim = attacker, victim
        self.convention = check_convention(convention)
        self._alpha1: list[np.ndarray] = []
        self._outer: torch.Tensor | None = None
        self._weighted: torch.Tensor | None = None
        self._units: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._sums = np.zeros(4)
        self._n = 0

    def update(self, dev_aa: torch.Tensor | None, dev_ab: torch.Tensor, dev_bb: torch.Tensor,
               delta_norm: torch.Tensor | None = None,
               random_dev: torch.Tensor | None = None) -> None:
        dev_ab, dev_bb = (t.detach().to(torch.float64) for t in (dev_ab, dev_bb))
        n_ab, n_bb = dev_ab.norm(dim=1), dev_bb.norm(dim=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = (n_ab / n_bb).cpu().numpy()
        defined = n_bb > 0
        ratio = np.where(defined.cpu().numpy(), ratio, np.nan)
        self._alpha1.append(ratio)
        if dev_aa is not None:
            self._update_outer(dev_aa.detach().to(torch.float64), dev_ab, defined, ratio)
        zeros = torch.zeros_like(n_ab)
        stats = (delta_norm if delta_norm is not None else zeros, n_ab, n_bb,
                 random_dev if random_dev is not None else zeros)
        self._sums += np.array([float(t.double().sum()) for t in stats])
        self._n += dev_ab.shape[0]

    def _update_outer(self, dev_aa: torch.Tensor, dev_ab: torch.Tensor, defined: torch.Tensor,
                      ratio: np.ndarray) -> None:
        # samples without alpha1 are left out of alpha2 and combined too (one sample set)
        keep = defined.to(torch.float64)[:, None]
        u_a, u_b = _unit_rows(dev_aa) * keep, _unit_rows(dev_ab) * keep
        w = torch.as_tensor(np.nan_to_num(ratio), dtype=torch.float64, device=u_a.device)
        if u_a.shape[1] * u_b.shape[1] <= _MAX_OUTER_ENTRIES:
            outer = u_a.T @ u_b
            weighted = (u_a * w[:, None]).T @ u_b
            self._outer = outer if self._outer is None else self._outer + outer
            self._weighted = weighted if self._weighted is None else self._weighted + weighted
        else:
            self._units.append((u_a.cpu(), u_b.cpu(), w.cpu()))

    def _frobenius(self) -> tuple[float, float]:
        if self._outer is None and not self._units:
            return math.nan, math.nan
        if self._outer is not None:
            return float(self._outer.norm()), float(self._weighted.norm())
        u_a = torch.cat([u[0] for u in self._units])
        u_b = torch.cat([u[1] for u in self._units])
        w = torch.cat([u[2] for u in self._units])
        gram = (u_a @ u_a.T) * (u_b @ u_b.T)
        return (math.sqrt(max(float(gram.sum()), 0.0)),
                math.sqrt(max(float((w[:, None] * gram * w[None, :]).sum()), 0.0)))

    def compute(self) -> DirectionResult:
        if self._n == 0:
            raise AdvTransferError("no samples were accumulated; call update() first")
        a1 = np.concatenate(self._alpha1)
        n_undefined = int(np.isnan(a1).sum())
        n_defined = self._n - n_undefined
        if n_undefined:
            warnings.warn(f"{n_undefined} of {self._n} samples where {self.victim} does not move "
                          "under its own attack have an undefined alpha1 (NaN); they are left out "
                          "of alpha1, alpha2 and combined", RuntimeWarning, stacklevel=2)
        s = self._sums / self._n
        stats = AttackStats(float(s[0]), float(s[1]), float(s[2]), float(s[3]))
        if n_defined == 0:
            mean = median = ladv = alpha2 = combined = math.nan
        else:
            outer, weighted = self._frobenius()
            alpha2, combined = outer / n_defined, weighted / n_defined
            if self.convention == "authors":
                alpha2, combined = alpha2**2, combined**2
            mean, median = float(np.nanmean(a1)), float(np.nanmedian(a1))
            ladv = float(np.nanmean(a1**2))
        return DirectionResult(
            attacker=self.attacker, victim=self.victim, alpha1=mean, alpha1_median=median,
            alpha1_ladv=ladv, alpha1_per_sample=a1, alpha2=alpha2, combined=combined,
            n_alpha1_above_one=int((a1 > 1).sum()), n_samples=self._n, n_undefined=n_undefined,
            convention=self.convention, stats=stats,
        )


def measure_matrix(
    models: Sequence[nn.Module],
    names: Sequence[str],
    data: DataLike,
    config: AttackConfig,
    *,
    pairs: Sequence[tuple[int, int]] | None = None,
    convention: Convention = "icml",
    alpha2: bool = True,
    noise_baseline: bool = False,
    output: OutputSelector | None = None,
    deviation_map: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 128,
    device: str | torch.device = "auto",
    generator: GeneratorLike = None,
    progress: bool = False,
) -> dict[tuple[int, int], DirectionResult]:
    """The engine behind :func:`transferability` and :func:`transfer_matrix`: every model is
    attacked once per sample and each perturbation is reused for every victim.

    Returns the direction results for ``pairs`` (default: all ordered pairs, diagonal included).
    A per-sample ``config.eps`` holds one value per sample of ``data`` (all batches together).
    ``deviation_map(j, Delta)`` transforms every deviation (batch, k_j) of victim j before it is
    accumulated (e.g. pooling a dense output for alpha2 while keeping its norm); the attacks
    always see the full output.

    Only the passes the pairs need are run: per batch one clean forward per model (none for a
    model whose FGSM attack computes f(x) itself), one attack per model in any pair, and the
    deviations Delta_{i->j}, Delta_{i->i} and Delta_{j->j} of each pair (i, j) (alpha1 needs the
    first and last, alpha2 the first two; ``alpha2=False`` asks for alpha1 alone: Delta_{i->i}
    of an attacker i that is no victim is then not evaluated and alpha2 and combined are NaN),
    evaluated under ``torch.inference_mode``. The
    random-noise baseline (``AttackStats.mean_random_deviation``) adds one forward per model
    and is computed only with ``noise_baseline=True`` (NaN otherwise); its noise is drawn either
    way, so switching it does not change any other number.
    """
    n = len(models)
    if n == 0:
        raise AdvTransferError("models must hold at least one model")
    models = [select_output(check_module(m, f"model {names[i]!r}"), output)
              for i, m in enumerate(models)]
    check_convention(convention)
    pairs = [(i, j) for i in range(n) for j in range(n)] if pairs is None else list(pairs)
    run_on = resolve_device(models, device)
    gen = as_generator(generator)
    accs = {(i, j): DirectionAccumulator(names[i], names[j], convention=convention)
            for i, j in pairs}
    attackers = sorted({i for i, _ in pairs} | {j for _, j in pairs})
    needed = sorted({k for i, j in pairs for k in ((i, j), (j, j), *([(i, i)] if alpha2 else []))})
    victims = sorted({j for _, j in pairs})
    eps_all = config.eps if isinstance(config.eps, torch.Tensor) and config.eps.numel() > 1 \
        else None
    seen = 0
    logs = {i: ConvergenceLog() for i in attackers}
    with frozen(*models):
        batches = iter_inputs(data, batch_size=batch_size)
        for x in track(batches, description="attacking", enabled=progress):
            x, config = _checked_batch(x, run_on, config, eps_all, seen)
            seen += len(x)
            eps = per_sample_eps(config.eps, x)
            clean, deltas = _attack_batch(models, names, x, config, gen, attackers, logs)
            noise = clip_to_bounds(x, random_on_sphere(x, eps, config.norm, gen,
                                                     mask_padding=config.mask_padding),
                                   config.bounds)
            dev, rnd = _batch_deviations(models, names, x, deltas, clean, noise, needed,
                                         victims if noise_baseline else [], deviation_map)
            for (i, j), acc in accs.items():
                acc.update(dev[(i, i)] if alpha2 else None, dev[(i, j)], dev[(j, j)],
                           norms(deltas[i], config.norm), rnd.get(j))
    if eps_all is not None and seen != eps_all.numel():
        raise AdvTransferError(f"eps holds {eps_all.numel()} per-sample values but data has "
                               f"{seen} samples; give one value per sample")
    return _matrix_results(accs, logs, noise_baseline)


def _checked_batch(x: torch.Tensor, run_on: torch.device, config: AttackConfig,
                   eps_all: torch.Tensor | None,
                   seen: int) -> tuple[torch.Tensor, AttackConfig]:
    """One batch of :func:`measure_matrix` on ``run_on``, checked (floating point, finite,
    within ``config.bounds``), and the configuration of its attacks: with per-sample budgets
    ``eps_all``, the slice of this batch (``seen`` samples came before it)."""
    if not x.is_floating_point():
        raise AdvTransferTypeError(f"data must hold floating-point inputs; got {x.dtype}")
    x = x.to(run_on)
    if not torch.isfinite(x).all():
        raise AdvTransferError("data contains NaN or inf; inputs must be finite")
    check_bounds(x, config.bounds)
    if eps_all is not None:  # this batch's slice of the per-sample budgets
        if seen + len(x) > eps_all.numel():
            raise AdvTransferError(f"eps holds {eps_all.numel()} per-sample values but "
                                   f"data has more samples; give one value per sample")
        config = replace(config, eps=eps_all.reshape(-1)[seen:seen + len(x)])
    return x, config


def _attack_batch(models: Sequence[nn.Module], names: Sequence[str], x: torch.Tensor,
                  config: AttackConfig, gen: torch.Generator | None, attackers: Sequence[int],
                  logs: dict[int, ConvergenceLog],
                  ) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """The clean outputs f_i(x) and the perturbations delta_i of every attacker i, in
    ``attackers`` order (the draws of ``gen`` follow it): one clean forward per model (none
    when the attack computes f(x) itself, :func:`~advtransfer.attacks.gives_clean`), one attack
    per model, each logged in ``logs[i]``."""
    clean: dict[int, torch.Tensor] = {}
    if not gives_clean(config):
        with torch.no_grad():
            clean = {i: forward(models[i], x, name=names[i]) for i in attackers}
    deltas = {}
    for i in attackers:
        out = run_attack(models[i], x, config, gen, name=names[i], y_clean=clean.get(i))
        logs[i].update(out)
        deltas[i] = out.delta
        if out.clean is not None:
            clean[i] = out.clean
    return clean, deltas


def _batch_deviations(
    models: Sequence[nn.Module], names: Sequence[str], x: torch.Tensor,
    deltas: dict[int, torch.Tensor], clean: dict[int, torch.Tensor], noise: torch.Tensor,
    needed: Sequence[tuple[int, int]], noisy: Sequence[int],
    deviation_map: Callable[[int, torch.Tensor], torch.Tensor] | None,
) -> tuple[dict[tuple[int, int], torch.Tensor], dict[int, torch.Tensor]]:
    """Under ``torch.inference_mode``: the deviations Delta_{i->j} = f_j(x + delta_i) - f_j(x)
    of the ``needed`` pairs (through ``deviation_map(j, .)`` when given) and, for the victims
    ``noisy``, the norms ||f_j(x + noise) - f_j(x)|| of the random-noise baseline."""
    with torch.inference_mode():
        dev = {(i, j): forward(models[j], x + deltas[i], name=names[j]) - clean[j]
               for i, j in needed}
        if deviation_map is not None:
            dev = {(i, j): deviation_map(j, d) for (i, j), d in dev.items()}
        rnd = {j: (forward(models[j], x + noise, name=names[j]) - clean[j]).norm(dim=1)
               for j in noisy}
    return dev, rnd


def _matrix_results(accs: dict[tuple[int, int], DirectionAccumulator],
                    logs: dict[int, ConvergenceLog],
                    noise_baseline: bool) -> dict[tuple[int, int], DirectionResult]:
    """Each pair's :class:`DirectionResult`, with the attacker's convergence statistics; the
    mean random deviation is NaN unless ``noise_baseline``."""
    results = {}
    for (i, j), acc in accs.items():
        r = acc.compute()
        stats = replace(r.stats, mean_iterations=logs[i].mean_iterations,
                        fraction_converged=logs[i].fraction_converged,
                        mean_random_deviation=r.stats.mean_random_deviation if noise_baseline
                        else math.nan)
        results[(i, j)] = replace(r, stats=stats)
    return results


def _config_dict(config: AttackConfig, **extra: Any) -> dict[str, Any]:
    eps = config.eps
    out = asdict(config)
    out["eps"] = eps.tolist() if isinstance(eps, torch.Tensor) else eps
    out.update(extra)
    return out


def transferability(
    source: nn.Module,
    target: nn.Module,
    data: DataLike,
    *,
    attack: AttackConfig | None = None,
    convention: Convention = "icml",
    noise_baseline: bool = False,
    output: OutputSelector | None = None,
    batch_size: int = 128,
    device: str | torch.device = "auto",
    seed: GeneratorLike = None,
    progress: bool = False,
    generator: GeneratorLike | NotGiven = NOT_GIVEN,
    **keywords: Unpack[AttackKeywords],
) -> TransferabilityResult:
    """alpha1, alpha2 and combined in both directions between ``source`` (f_S) and ``target``
    (f_T), from one attack on each model per sample.

    ``data`` is a tensor of inputs, a Dataset or a DataLoader yielding x or (x, y). The attack
    is ``attack=AttackConfig(...)`` or, instead, its fields as keyword arguments (``eps=``,
    ``norm=``, ``objective=``, ``solver=``, ``steps=``, ``step_size=``, ``random_start=``,
    ``bounds=``, ``tol=``, ``iterate=``; defaults and meaning as in :func:`advtransfer.attack`);
    giving both is an error. ``result.source_to_target`` holds attacks crafted on S applied to
    T (alpha^{S->T}), the direction the authors' ``know2adv.py`` reports first;
    ``result.target_to_source`` the reverse, the direction of their ``adv2know.py``.

    ``eps`` is a float or one value per sample of ``data``. ``convention`` chooses how alpha2 and
    combined are reported (``"icml"``: unsquared, the default; ``"authors"``: squared, as the
    authors' image code; see the module docstring). ``output`` selects the tensor a model returns
    when its output is a tuple, a mapping or an object: an int index, a str key/attribute or a
    callable; ``None`` uses :func:`advtransfer.models.adapters.as_output` (tensors as they are,
    ``logits``/``out``/... keys, the first element of a tuple with a warning).
    ``noise_baseline=True`` also measures each victim's deviation under random noise of norm
    eps (``stats.mean_random_deviation``; one more forward per model and sample; NaN when off).
    ``seed`` drives the random starts, power iterations and noise: an int seeds a fresh
    ``torch.Generator``, a generator is used as is, None uses the global RNG; ``generator=`` is
    its deprecated former name (a ``FutureWarning``; both at once is an error).

    Example:
        >>> import torch
        >>> from advtransfer.attacks import AttackConfig
        >>> s, t = torch.nn.Linear(5, 3), torch.nn.Linear(5, 3)
        >>> x = torch.rand(16, 5)
        >>> r = transferability(s, t, x, eps=0.05, solver="first_order", steps=30, seed=0)
        >>> 0.0 <= r.source_to_target.alpha2 <= 1.0
        True
        >>> config = AttackConfig(eps=0.05, solver="first_order", steps=30)
        >>> transferability(s, t, x, attack=config, seed=0).source_to_target.alpha2 == (
        ...     r.source_to_target.alpha2)
        True
    """
    gen = resolve_seed(seed, generator)
    config = resolve_attack(attack, keywords)
    out = measure_matrix([source, target], ["source", "target"], data, config,
                         pairs=[(0, 1), (1, 0)], convention=convention,
                         noise_baseline=noise_baseline, output=output,
                         batch_size=batch_size,
                         device=device, generator=gen, progress=progress)
    return TransferabilityResult(out[(0, 1)], out[(1, 0)],
                                 _config_dict(config, convention=convention))


def transfer_matrix(
    models: Sequence[nn.Module] | Mapping[str, nn.Module],
    data: DataLike,
    *,
    attack: AttackConfig | None = None,
    convention: Convention = "icml",
    noise_baseline: bool = False,
    output: OutputSelector | None = None,
    batch_size: int = 128,
    device: str | torch.device = "auto",
    seed: GeneratorLike = None,
    progress: bool = False,
    generator: GeneratorLike | NotGiven = NOT_GIVEN,
    **keywords: Unpack[AttackKeywords],
) -> TransferMatrixResult:
    """N x N alpha1/alpha2/combined between every ordered pair of ``models`` (a list, or a mapping
    from names to models), attacking each model once per sample (N attacks, not N^2).
    Arguments (``attack=AttackConfig(...)`` or the attack keywords, not both; ``seed``, with
    ``generator=`` its deprecated former name) as in :func:`transferability`."""
    gen = resolve_seed(seed, generator)
    if isinstance(models, Mapping):
        names, mods = [str(k) for k in models], list(models.values())
    else:
        mods = list(models)
        names = [f"model_{i}" for i in range(len(mods))]
    config = resolve_attack(attack, keywords)
    out = measure_matrix(mods, names, data, config, convention=convention,
                         noise_baseline=noise_baseline, output=output, batch_size=batch_size,
                         device=device, generator=gen, progress=progress)
    return matrix_result(names, out, _config_dict(config, convention=convention))


def matrix_result(names: Sequence[str], out: Mapping[tuple[int, int], DirectionResult],
                  config: dict[str, Any]) -> TransferMatrixResult:
    """The :class:`TransferMatrixResult` of :func:`measure_matrix`'s output for all pairs."""
    n = len(names)

    def grid(attr: str) -> np.ndarray:
        return np.array([[getattr(out[(i, j)], attr) for j in range(n)] for i in range(n)])

    return TransferMatrixResult(tuple(names), grid("alpha1"), grid("alpha2"), grid("combined"),
                                grid("n_alpha1_above_one"), dict(out), config)
