r"""Transferability against one shared reference model, one candidate at a time.

Model selection (:func:`advtransfer.selection.rank`) and the paper's recipes compare many
candidate (source) models f_S with one reference (target-trained) model f_T on the same inputs.
The reference's part of every comparison is the same, so it is computed once
(:func:`attack_reference`) and kept as a :class:`ReferenceAttack`, a set of tensors that can be
saved to and loaded from one safetensors file:

* the attacked inputs x (n samples) and the per-sample budgets eps;
* delta_T(x), the reference's own attack;
* f_T(x) and Delta_{T->T}(x) = f_T(x + delta_T(x)) - f_T(x);
* optionally ||f_T(x + r) - f_T(x)|| under random noise r of norm eps (the noise baseline).

Each candidate is then measured on its own (:func:`measure_against_reference`): one attack
delta_S on the candidate and, per batch, the deviations

* t2s (attack crafted on the reference, applied to the candidate; the authors' image protocol):
  Delta_{T->S} = f_S(x + delta_T) - f_S(x) and Delta_{S->S} = f_S(x + delta_S) - f_S(x), so
  alpha1^{T->S} = E_x ||Delta_{T->S}|| / ||Delta_{S->S}|| and alpha2^{T->S} =
  ||E_x[u_{T->T} u_{T->S}^T]||_F (docs/design.md §2);
* s2t (crafted on the candidate, applied to the reference): Delta_{S->T} = f_T(x + delta_S) -
  f_T(x), with Delta_{T->T} from the stored reference part; this direction needs the reference
  model itself (one forward per sample), t2s does not.

N candidates cost N + 1 attacks, memory holds one candidate at a time, and a candidate's result
does not depend on which other candidates are measured: every attack draws its random start and
noise from a generator seeded by (``seed``, the model's name) (:func:`unit_seed`). The numbers
are those of :func:`advtransfer.metrics.measure_matrix` with the pairs (T, S) and (S, T) up to
these random draws (tested).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advtransfer.attacks import (
    AttackConfig,
    AttackOutput,
    ConvergenceLog,
    check_bounds,
    clip_to_bounds,
    gives_clean,
    norms,
    per_sample_eps,
    random_on_sphere,
    run_attack,
)
from advtransfer.errors import AdvTransferError, AdvTransferTypeError
from advtransfer.metrics import (
    Convention,
    DirectionAccumulator,
    DirectionResult,
    check_convention,
    resolve_device,
)
from advtransfer.models.adapters import OutputSelector, check_module, forward, frozen, select_output
from advtransfer.progress import track

__all__ = ["DIRECTIONS", "ReferenceAttack", "attack_reference", "measure_against_reference",
           "unit_seed"]

#: "t2s": crafted on the reference (target model), applied to the candidate; "s2t": the reverse.
DIRECTIONS: tuple[str, ...] = ("t2s", "s2t")


def unit_seed(seed: int, name: str) -> int:
    """The seed of one model's attack and noise draws: a hash of (``seed``, ``name``), so that
    a model's numbers depend neither on the other models measured nor on their order."""
    digest = hashlib.sha256(f"{int(seed)}:{name}".encode()).hexdigest()
    return int(digest[:8], 16)


@dataclass(frozen=True)
class ReferenceAttack:
    """The reference model's part of every comparison, computed once (see the module
    docstring). All tensors are on the CPU, first dimension n (the attacked samples).

    Attributes:
        x: the attacked inputs.
        eps: the per-sample budgets (n,).
        delta: delta_T(x), the reference's attack.
        clean: f_T(x), flattened to (n, m_T).
        deviation: Delta_{T->T}(x) = f_T(x + delta_T) - f_T(x), (n, m_T).
        iterations: attack iterations per sample (n,).
        converged: whether each sample's attack met its tolerance (n,), or None when the
            solver has no convergence test.
        random_deviation: ||f_T(x + r) - f_T(x)|| for random r of norm eps (n,), or None when
            the noise baseline was not asked for.
    """

    x: torch.Tensor
    eps: torch.Tensor
    delta: torch.Tensor
    clean: torch.Tensor
    deviation: torch.Tensor
    iterations: torch.Tensor
    converged: torch.Tensor | None = None
    random_deviation: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def tensors(self) -> dict[str, torch.Tensor]:
        """The fields as a ``name -> tensor`` mapping (optional fields left out when None)."""
        out = {k: getattr(self, k) for k in ("x", "eps", "delta", "clean", "deviation",
                                             "iterations")}
        for k in ("converged", "random_deviation"):
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        return {k: v.detach().cpu().contiguous() for k, v in out.items()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> ReferenceAttack:
        """The inverse of :meth:`tensors` (raises naming a missing field)."""
        missing = [k for k in ("x", "eps", "delta", "clean", "deviation", "iterations")
                   if k not in tensors]
        if missing:
            raise AdvTransferError(f"a reference attack needs the tensors {missing}")
        return cls(**{k: tensors[k] for k in ("x", "eps", "delta", "clean", "deviation",
                                               "iterations")},
                   converged=tensors.get("converged"),
                   random_deviation=tensors.get("random_deviation"))

    def save(self, path: str | Path) -> Path:
        """Write the tensors to a safetensors file atomically."""
        from advtransfer.models.checkpoint import save_model

        return save_model(self.tensors(), path)

    @classmethod
    def load(cls, path: str | Path) -> ReferenceAttack:
        """Read a file written by :meth:`save` (safetensors: no code is unpickled)."""
        from safetensors.torch import load_file

        return cls.from_tensors(load_file(str(path)))

    @property
    def mean_iterations(self) -> float:
        return float(self.iterations.double().mean()) if len(self) else math.nan

    @property
    def fraction_converged(self) -> float:
        if self.converged is None:
            return math.nan
        return float(self.converged.double().mean()) if len(self) else math.nan


def _flat(y: torch.Tensor) -> torch.Tensor:
    return y.reshape(y.shape[0], -1)


def _attack_batches(x: torch.Tensor, eps: torch.Tensor, batch_size: int):
    for start in range(0, len(x), batch_size):
        yield slice(start, start + batch_size), x[start:start + batch_size], \
            eps[start:start + batch_size]


def _check_inputs(x: Any, config: AttackConfig) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(x, torch.Tensor):
        raise AdvTransferTypeError(f"x must be a tensor of inputs; got {type(x).__name__}")
    if not x.is_floating_point():
        raise AdvTransferTypeError(f"x must hold floating-point inputs; got {x.dtype}")
    if len(x) == 0:
        raise AdvTransferError("x holds no samples; pass at least one input")
    if not torch.isfinite(x).all():
        raise AdvTransferError("x contains NaN or inf; inputs must be finite")
    check_bounds(x, config.bounds)
    eps = config.eps
    if isinstance(eps, torch.Tensor) and eps.numel() > 1:
        if eps.numel() != len(x):
            raise AdvTransferError(f"eps holds {eps.numel()} per-sample values but x has "
                                   f"{len(x)} samples; give one value per sample")
        return x, eps.reshape(-1).detach().cpu().to(x.dtype)
    return x, per_sample_eps(eps, x[:1]).detach().cpu().to(x.dtype).expand(len(x)).clone()


def _one_attack(model: nn.Module, x: torch.Tensor, eps: torch.Tensor, config: AttackConfig,
                gen: torch.Generator, name: str,
                clean: torch.Tensor | None = None) -> tuple[AttackOutput, torch.Tensor]:
    """One batch's attack and the clean output f(x): one forward pass serves both (the
    attack's f(x) and the deviations' baseline); the one-step ``ce`` attack computes it in the
    forward pass whose gradient it follows, and a ``clean`` the caller already has (flattened
    f(x)) saves it altogether."""
    config = replace(config, eps=eps)
    if clean is None and gives_clean(config):
        out = run_attack(model, x, config, gen, name=name)
        assert out.clean is not None
        return out, out.clean
    if clean is None:
        with torch.no_grad():
            clean = forward(model, x, name=name)
    return run_attack(model, x, config, gen, name=name, y_clean=clean), clean


def attack_reference(
    reference: nn.Module,
    x: torch.Tensor,
    config: AttackConfig,
    *,
    seed: int = 0,
    name: str = "reference",
    output: OutputSelector | None = None,
    noise_baseline: bool = False,
    batch_size: int = 128,
    device: str | torch.device = "auto",
    progress: bool = False,
    clean: torch.Tensor | None = None,
) -> ReferenceAttack:
    """Attack ``reference`` (f_T) once on the inputs ``x`` and keep what every candidate's
    comparison needs (a :class:`ReferenceAttack`). ``config.eps`` is a float or one value per
    sample of ``x``; the draws come from ``unit_seed(seed, name)``. ``clean``, when the caller
    has already evaluated f_T(x) (e.g. for the reference's accuracy), is that output, one row
    per sample of ``x``: it saves a forward pass per sample."""
    model = select_output(check_module(reference, f"model {name!r}"), output)
    x, eps = _check_inputs(x, config)
    if clean is not None and (not isinstance(clean, torch.Tensor) or len(clean) != len(x)):
        raise AdvTransferError(f"clean must hold f_T(x), one row per sample of x ({len(x)}); "
                               f"got {type(clean).__name__} of length "
                               f"{len(clean) if hasattr(clean, '__len__') else '?'}")
    run_on = resolve_device([model], device)
    gen = torch.Generator().manual_seed(unit_seed(seed, name))
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("delta", "clean", "deviation",
                                                            "iterations", "converged", "random")}
    with frozen(model):
        for sl, xb, eb in track(_attack_batches(x, eps, batch_size), description="attacking "
                                "the reference", enabled=progress):
            xb, eb = xb.to(run_on), eb.to(run_on)
            known = None if clean is None else _flat(clean[sl]).to(run_on, xb.dtype)
            out, clean_b = _one_attack(model, xb, eb, config, gen, name, known)
            noise = clip_to_bounds(xb, random_on_sphere(xb, eb, config.norm, gen,
                                                        mask_padding=config.mask_padding),
                                   config.bounds)
            with torch.inference_mode():
                dev = forward(model, xb + out.delta, name=name) - clean_b
                if noise_baseline:
                    parts["random"].append(_flat(forward(model, xb + noise, name=name) - clean_b)
                                           .norm(dim=1).cpu())
            parts["delta"].append(out.delta.detach().cpu())
            parts["clean"].append(_flat(clean_b).detach().cpu())
            parts["deviation"].append(_flat(dev).cpu())
            parts["iterations"].append(out.iterations.detach().cpu())
            if out.converged is not None:
                parts["converged"].append(out.converged.detach().cpu())
    return ReferenceAttack(
        x=x.detach().cpu(), eps=eps, delta=torch.cat(parts["delta"]),
        clean=torch.cat(parts["clean"]), deviation=torch.cat(parts["deviation"]),
        iterations=torch.cat(parts["iterations"]),
        converged=torch.cat(parts["converged"]) if parts["converged"] else None,
        random_deviation=torch.cat(parts["random"]) if noise_baseline else None)


def measure_against_reference(
    candidate: nn.Module,
    ref: ReferenceAttack,
    config: AttackConfig,
    *,
    reference: nn.Module | None = None,
    directions: Sequence[str] = DIRECTIONS,
    alpha2: bool = True,
    convention: Convention = "icml",
    seed: int = 0,
    name: str = "candidate",
    reference_name: str = "reference",
    output: OutputSelector | None = None,
    noise_baseline: bool = False,
    batch_size: int = 128,
    device: str | torch.device = "auto",
    progress: bool = False,
) -> dict[str, DirectionResult]:
    """alpha1, alpha2 and combined between ``candidate`` (f_S) and the reference whose attack
    is ``ref``, in the ``directions`` asked (``"t2s"``, ``"s2t"``; see the module docstring).

    The candidate is attacked once per sample (draws from ``unit_seed(seed, name)``), with the
    configuration ``config`` the reference was attacked with (its per-sample eps come from
    ``ref``). ``reference`` (the model f_T) is needed for ``"s2t"`` only. ``alpha2=False``
    measures alpha1 alone (alpha2/combined NaN): the candidate's own deviation is then not
    evaluated for s2t. ``noise_baseline=True`` needs ``ref`` computed with it too.

    Returns ``{direction: DirectionResult}`` for the directions asked."""
    directions = _check_measure_arguments(directions, convention, ref, noise_baseline)
    model = select_output(check_module(candidate, f"model {name!r}"), output)
    ref_model = None
    if "s2t" in directions:
        if reference is None:
            raise AdvTransferError("direction 's2t' applies the candidate's attack to the "
                                   "reference: pass reference=<the reference model>")
        ref_model = select_output(check_module(reference, f"model {reference_name!r}"), output)
    run_on = resolve_device([m for m in (model, ref_model) if m is not None], device)
    gen = torch.Generator().manual_seed(unit_seed(seed, name))
    accs = {"t2s": DirectionAccumulator(reference_name, name, convention=convention),
            "s2t": DirectionAccumulator(name, reference_name, convention=convention)}
    log = ConvergenceLog()
    frozen_models = [m for m in (model, ref_model) if m is not None]
    with frozen(*frozen_models):
        for sl, xb, eb in track(_attack_batches(ref.x, ref.eps, batch_size),
                                description=f"measuring {name}", enabled=progress):
            xb, eb = xb.to(run_on), eb.to(run_on)
            out, clean = _one_attack(model, xb, eb, config, gen, name)
            log.update(out)
            noise = clip_to_bounds(xb, random_on_sphere(xb, eb, config.norm, gen,
                                                        mask_padding=config.mask_padding),
                                   config.bounds)
            _measure_batch(model, ref_model, ref, sl, xb, out.delta, clean, noise, config,
                           accs, directions=directions, alpha2=alpha2,
                           noise_baseline=noise_baseline, name=name,
                           reference_name=reference_name)
    return _direction_results(accs, directions, ref, log, noise_baseline)


def _check_measure_arguments(directions: Sequence[str], convention: Convention, ref: Any,
                             noise_baseline: bool) -> tuple[str, ...]:
    """The checks of :func:`measure_against_reference`'s arguments; returns ``directions`` as
    a tuple (a non-empty subset of :data:`DIRECTIONS`)."""
    directions = tuple(directions)
    bad = [d for d in directions if d not in DIRECTIONS]
    if bad or not directions:
        raise AdvTransferError(f"directions must be a non-empty subset of {list(DIRECTIONS)}; "
                               f"got {list(directions)}")
    check_convention(convention)
    if not isinstance(ref, ReferenceAttack):
        raise AdvTransferTypeError(f"ref must be a ReferenceAttack (from attack_reference); got "
                                   f"{type(ref).__name__}")
    if noise_baseline and ref.random_deviation is None:
        raise AdvTransferError("noise_baseline=True needs a reference attack computed with "
                               "noise_baseline=True")
    return directions


def _measure_batch(model: nn.Module, ref_model: nn.Module | None, ref: ReferenceAttack,
                   sl: slice, xb: torch.Tensor, delta: torch.Tensor, clean: torch.Tensor,
                   noise: torch.Tensor, config: AttackConfig,
                   accs: dict[str, DirectionAccumulator], *, directions: tuple[str, ...],
                   alpha2: bool, noise_baseline: bool, name: str, reference_name: str) -> None:
    """One batch ``xb`` (the samples ``sl`` of ``ref``) of :func:`measure_against_reference`,
    given the candidate's perturbation ``delta`` and clean output ``clean``: its deviations
    Delta_{S->S} (t2s, or alpha2), Delta_{T->S} (t2s) and, through ``ref_model``,
    Delta_{S->T} (s2t), each added to its direction's accumulator with the reference's stored
    Delta_{T->T}; the noise deviation only with ``noise_baseline``. The forward passes run
    under ``torch.inference_mode``."""
    run_on = xb.device
    dev_tt = ref.deviation[sl].to(run_on)
    with torch.inference_mode():
        dev_ss = (_flat(forward(model, xb + delta, name=name) - clean)
                  if "t2s" in directions or alpha2 else None)
        rnd_s = (_flat(forward(model, xb + noise, name=name) - clean).norm(dim=1)
                 if noise_baseline else None)
        if "t2s" in directions:
            dev_ts = _flat(forward(model, xb + ref.delta[sl].to(run_on), name=name) - clean)
            assert dev_ss is not None
            accs["t2s"].update(dev_tt if alpha2 else None, dev_ts, dev_ss,
                               norms(ref.delta[sl], config.norm), rnd_s)
        if "s2t" in directions:
            assert ref_model is not None
            dev_st = _flat(forward(ref_model, xb + delta, name=reference_name)) \
                - ref.clean[sl].to(run_on)
            rnd_t = ref.random_deviation[sl] if noise_baseline else None
            accs["s2t"].update(dev_ss if alpha2 else None, dev_st, dev_tt,
                               norms(delta, config.norm), rnd_t)


def _direction_results(accs: dict[str, DirectionAccumulator], directions: tuple[str, ...],
                       ref: ReferenceAttack, log: ConvergenceLog,
                       noise_baseline: bool) -> dict[str, DirectionResult]:
    """Each asked direction's :class:`DirectionResult`, with the attacker's convergence
    statistics (the reference's stored ones for t2s, the candidate's ``log`` for s2t); the
    mean random deviation is NaN unless ``noise_baseline``."""
    results = {}
    for d in directions:
        r = accs[d].compute()
        if d == "t2s":
            its, conv = ref.mean_iterations, ref.fraction_converged
        else:
            its, conv = log.mean_iterations, log.fraction_converged
        stats = replace(r.stats, mean_iterations=its, fraction_converged=conv,
                        mean_random_deviation=r.stats.mean_random_deviation if noise_baseline
                        else math.nan)
        results[d] = replace(r, stats=stats)
    return results
