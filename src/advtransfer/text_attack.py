r"""The authors' text attack: a Carlini-Wagner margin attack in embedding space whose iterate is
snapped to vocabulary words after every step, so that the adversarial example is text.

Every text model reads embedded sequences x = table[ids] ([B, L, E]; row 0 of ``table`` is the
all-zero padding row). :func:`snapped_attack` searches token ids ids' with, per sequence,

    loss(x') = const * max(z_y(x') - max_{j != y} z_j(x') + confidence, 0) + ||x' - x||_2^2

small, x' = table[ids'], z = the model's logits, y = the label pushed away from (untargeted; the
model's own clean prediction by default). The iteration, for t = 1..steps, with a perturbation
w (initially 0) optimised by Adam (learning rate ``lr``) and the snapped iterate s_0 = x::

    v_t   = s_{t-1} + m * w_t                       (m = 1 at attackable positions, else 0)
    s_t   = nearest vocabulary row of v_t, per attackable position (Euclidean distance)
    loss  = sum over the batch of loss(s_t)         (forward on s_t; dloss/dw = m * dloss/ds_t)
    w_t+1 = Adam step on w_t, after clipping each sample's gradient to L2 norm <= 0.5

and the result is, per sequence, the s_t of smallest ||s_t - x||^2 among those the model
misclassifies (prediction != y); a sequence never misclassified keeps its ids.

Where this follows the authors (``adversarial-transfer-nlp/CW_attack.py``, word-level branch,
with the settings of their README: ``--lr 0.2 --const 10 --confidence 10``, ``max_steps`` 100,
one binary-search step):

* what is optimised is the perturbation w (``modifier_var``), not the embedding; the snapped
  iterate becomes the base of the next step (their ``itereated_var``), and neither w nor the
  Adam state is reset when a position changes word, so v_t = s_{t-1} + w_t;
* "nearest" is the Euclidean (L2) distance to every row of the table (``torch.norm(.., 2)``);
* the model sees the snapped s_t, and the gradient reaches w straight through the snapping
  (they overwrite ``input_adv.data`` after building ``modifier * mask + itereated_var``);
* the loss is const * hinge + ||s_t - x||^2 (the squared L2 distance, their ``l2_dist``, between
  the snapped iterate and the clean embedding), summed over the batch, on the logits;
* gradients are clipped to norm 0.5 (their ``--clip`` default) before every Adam step;
* the answer is the successful iterate of smallest distance, else the clean text;
* step 1 evaluates the clean input (w = 0), so ``steps`` equals the number of forward passes.

Where it differs:

* the mask: they attack positions 1..n-2 ([CLS] and the final [SEP] excluded by position) but
  also add w, unsnapped, to the final [SEP] and the padding while optimising; here a position is
  attacked iff its id is neither padding (0) nor in ``frozen``, and other positions stay
  exactly table[ids] throughout (pass the ids of [CLS]/[SEP] as ``frozen``);
* snapping targets exclude the padding row and the ``frozen`` ids (theirs: the whole vocabulary,
  [PAD]/[CLS]/[SEP]/[MASK] included);
* the clip is per sample (theirs: the whole batch's modifier; their runs use batch size 1), so a
  sequence's attack does not depend on the rest of the batch;
* ``success`` is re-evaluated on the returned ids (as their ``retest``);
* ``init_scale`` > 0 starts w from N(0, init_scale^2) at attackable coordinates (drawn from
  ``seed``; their ``init_rand`` flag, unimplemented there); the default 0 is their zero start,
  and then the attack uses no randomness.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from advtransfer.attacks import GeneratorLike, as_generator
from advtransfer.errors import AdvTransferError, AdvTransferTypeError
from advtransfer.models.adapters import forward
from advtransfer.models.adapters import frozen as frozen_model

__all__ = ["GRAD_CLIP", "SnappedAttack", "nearest_words", "snapped_attack"]

#: Per-sample L2 norm the gradient of w is clipped to before each Adam step (authors' ``--clip``).
GRAD_CLIP = 0.5
# Distance matrices are computed in chunks of at most this many entries.
_CHUNK_ENTRIES = 1 << 22


@dataclass(frozen=True)
class SnappedAttack:
    """Result of :func:`snapped_attack` for a batch of B sequences of length L.

    ``ids`` [B, L] the adversarial token ids; ``changed`` [B] the number of positions where
    ``ids`` differs from the clean ids; ``success`` [B] bool, the model's prediction on
    ``embedded`` differs from the label; ``delta`` [B, L, E] = table[ids] - table[clean ids]
    (zero at padding and unchanged positions); ``embedded`` [B, L, E] = table[ids]."""

    ids: torch.Tensor
    changed: torch.Tensor
    success: torch.Tensor
    delta: torch.Tensor
    embedded: torch.Tensor


def nearest_words(vectors: torch.Tensor, table: torch.Tensor,
                  candidates: torch.Tensor) -> torch.Tensor:
    """For each row v of ``vectors`` [N, E], the id c in ``candidates`` (1-D ids into ``table``)
    minimising ||v - table[c]||_2 (the first such candidate on ties), as a LongTensor [N].

    Computed as argmin_c (||table[c]||^2 - 2 <v, table[c]>) with one matrix product per chunk of
    rows (at most 2^22 distances at a time)."""
    rows = table[candidates]
    sq_norms = rows.pow(2).sum(1)
    chunk = max(1, _CHUNK_ENTRIES // max(1, rows.shape[0]))
    out = [torch.addmm(sq_norms, part, rows.T, alpha=-2.0).argmin(1)
           for part in vectors.split(chunk)]
    if not out:
        return candidates.new_empty(0)
    return candidates[torch.cat(out)]


def _margin(logits: torch.Tensor, labels: torch.Tensor, confidence: float) -> torch.Tensor:
    """max(z_y - max_{j != y} z_j + confidence, 0) per sample."""
    real = logits.gather(1, labels[:, None])[:, 0]
    others = logits.scatter(1, labels[:, None], float("-inf")).amax(1)
    return (real - others + confidence).clamp(min=0.0)


def _number(value: object, name: str, *, positive: bool) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        accepted = "> 0" if positive else ">= 0"
        raise AdvTransferError(f"{name} must be a finite number {accepted}; got {value!r}")
    return float(value)


def _check_table(table: object) -> torch.Tensor:
    if not isinstance(table, torch.Tensor) or not table.is_floating_point():
        raise AdvTransferTypeError("table must be a floating-point tensor [vocabulary, dim]")
    if table.dim() != 2 or table.shape[0] < 2 or table.shape[1] < 1:
        raise AdvTransferError(f"table must have shape [vocabulary >= 2, dim >= 1]; got "
                               f"{list(table.shape)}")
    table = table.detach()
    if not torch.isfinite(table).all():
        raise AdvTransferError("table must be finite")
    zero = table.abs().amax(1) == 0
    if not zero[0] or zero[1:].any():
        raise AdvTransferError("table rows: row 0 (padding) must be all zero and every other row "
                               "nonzero (an all-zero row reads as padding)")
    return table


def _check_ids(ids: object, vocab: int, device: torch.device) -> torch.Tensor:
    if not isinstance(ids, torch.Tensor) or ids.dtype != torch.long:
        raise AdvTransferTypeError("ids must be a LongTensor [batch, length] of token ids")
    if ids.dim() != 2 or ids.shape[0] < 1 or ids.shape[1] < 1:
        raise AdvTransferError(f"ids must be 2-D [batch >= 1, length >= 1]; got "
                               f"{list(ids.shape)}")
    if ids.min() < 0 or ids.max() >= vocab:
        raise AdvTransferError(f"ids must lie in 0..{vocab - 1} (the rows of table); got "
                               f"{int(ids.min())}..{int(ids.max())}")
    return ids.to(device)


def _check_frozen(frozen_ids: Iterable[int] | None, vocab: int) -> list[int]:
    if frozen_ids is None:
        return []
    try:
        values = list(frozen_ids)
    except TypeError:
        raise AdvTransferTypeError("frozen must be None or a set of token ids") from None
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int)
           or not 0 <= v < vocab]
    if bad:
        raise AdvTransferError(f"frozen must hold integer ids in 0..{vocab - 1}; got {bad[:5]}")
    return sorted(set(values))


def _check_labels(labels: object, batch: int, classes: int, device: torch.device) -> torch.Tensor:
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.long:
        raise AdvTransferTypeError("labels must be None or a LongTensor [batch] of class ids")
    if labels.shape != (batch,):
        raise AdvTransferError(f"labels must have shape [{batch}]; got {list(labels.shape)}")
    if labels.min() < 0 or labels.max() >= classes:
        raise AdvTransferError(f"labels must lie in 0..{classes - 1} (the model's outputs)")
    return labels.to(device)


def _check_steps(steps: object) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise AdvTransferError(f"steps must be an integer >= 0; got {steps!r}")
    return steps


@dataclass(frozen=True)
class _Problem:
    """The validated inputs of one attack: clean ids and embedding, labels, attackable mask
    [B, L] and the candidate ids snapping may choose."""

    ids: torch.Tensor
    clean: torch.Tensor
    labels: torch.Tensor
    attackable: torch.Tensor
    candidates: torch.Tensor


def _clip_per_sample(grad: torch.Tensor, max_norm: float) -> torch.Tensor:
    """grad scaled per sample by min(1, max_norm / (||grad_i||_2 + 1e-6)) (as
    ``torch.nn.utils.clip_grad_norm_`` scales the whole tensor)."""
    norms = grad.flatten(1).norm(dim=1)
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    return grad * scale.view(-1, *([1] * (grad.dim() - 1)))


def _optimise(model: nn.Module, table: torch.Tensor, problem: _Problem, w: torch.Tensor, *,
              steps: int, lr: float, confidence: float, const: float) -> torch.Tensor:
    """The snapped iteration of the module docstring; returns the best successful ids per
    sequence (the clean ids where no iterate succeeds)."""
    where = problem.attackable
    m = where.unsqueeze(-1).to(table.dtype)
    snapped, best = problem.ids.clone(), problem.ids.clone()
    best_dist = torch.full((len(best),), math.inf, dtype=table.dtype, device=table.device)
    w.requires_grad_(True)
    optimizer = torch.optim.Adam([w], lr=lr)
    for _ in range(steps):
        with torch.no_grad():
            v = table[snapped] + w * m
            snapped = snapped.clone()
            snapped[where] = nearest_words(v[where], table, problem.candidates)
        shift = w * m
        x = table[snapped] + shift - shift.detach()  # value s_t, gradient straight to w
        logits = forward(model, x)
        dist = (x - problem.clean).pow(2).sum((1, 2))
        loss = (const * _margin(logits, problem.labels, confidence) + dist).sum()
        with torch.no_grad():
            hit = (logits.argmax(1) != problem.labels) & (dist < best_dist)
            best[hit], best_dist[hit] = snapped[hit], dist[hit]
        optimizer.zero_grad()
        loss.backward()
        with torch.no_grad():
            w.grad = _clip_per_sample(w.grad, GRAD_CLIP)
        optimizer.step()
    return best


def _problem(model: nn.Module, ids: torch.Tensor, table: torch.Tensor,
             labels: torch.Tensor | None, frozen_ids: list[int]) -> _Problem:
    """Clean embedding, labels (the clean predictions when None), attackable positions (id not
    0 and not frozen) and snapping candidates (every id but 0 and the frozen ones)."""
    vocab = table.shape[0]
    clean = table[ids]
    with torch.no_grad():
        logits = forward(model, clean)
    if logits.shape[1] < 2:
        raise AdvTransferError(f"model must return >= 2 logits per sequence; got "
                               f"{logits.shape[1]}")
    if labels is None:
        labels = logits.argmax(1)
    else:
        labels = _check_labels(labels, len(ids), logits.shape[1], table.device)
    excluded = torch.zeros(vocab, dtype=torch.bool, device=table.device)
    excluded[[0, *frozen_ids]] = True
    attackable = ~excluded[ids]
    candidates = torch.nonzero(~excluded)[:, 0]
    if attackable.any() and len(candidates) == 0:
        raise AdvTransferError("frozen excludes every word of table: nothing left to snap to")
    return _Problem(ids, clean, labels, attackable, candidates)


def snapped_attack(model: nn.Module, ids: torch.Tensor, table: torch.Tensor, *,
                   steps: int = 100, lr: float = 0.2, confidence: float = 10.0,
                   const: float = 10.0, labels: torch.Tensor | None = None,
                   frozen: Iterable[int] | None = None, seed: GeneratorLike = None,
                   init_scale: float = 0.0) -> SnappedAttack:
    """The authors' snapped Carlini-Wagner text attack (module docstring) on ``model``, which
    reads embedded sequences table[ids] [B, L, E] and returns logits [B, k].

    ``ids`` [B, L] LongTensor in 0..V-1 (0 = padding, never changed); ``table`` [V, E] with an
    all-zero row 0 and no other zero row; ``frozen`` token ids never changed nor chosen (e.g.
    [CLS]/[SEP]); ``labels`` [B] the classes pushed away from (default: the model's clean
    predictions); ``steps`` >= 0 forward passes (0: the clean ids are returned), Adam ``lr`` > 0,
    ``confidence`` >= 0 (kappa of the hinge), ``const`` > 0 (weight of the hinge against the
    squared distance); ``init_scale`` >= 0 the std of a random initial w drawn from ``seed`` (an
    int, a ``torch.Generator`` or None for the global RNG). The model runs in eval mode with
    its parameters frozen; its modes, ``requires_grad`` flags and ``.grad`` are restored.
    """
    table = _check_table(table)
    ids = _check_ids(ids, table.shape[0], table.device)
    steps = _check_steps(steps)
    lr = _number(lr, "lr", positive=True)
    confidence = _number(confidence, "confidence", positive=False)
    const = _number(const, "const", positive=True)
    init_scale = _number(init_scale, "init_scale", positive=False)
    generator = as_generator(seed, "seed")
    frozen_ids = _check_frozen(frozen, table.shape[0])
    with frozen_model(model), torch.enable_grad():
        problem = _problem(model, ids, table, labels, frozen_ids)
        w = torch.zeros_like(problem.clean)
        if init_scale > 0:
            device = generator.device if generator is not None else w.device
            noise = torch.randn(w.shape, generator=generator, device=device, dtype=w.dtype)
            w = noise.to(w.device) * init_scale * problem.attackable.unsqueeze(-1)
        adv = _optimise(model, table, problem, w, steps=steps, lr=lr, confidence=confidence,
                        const=const)
        embedded = table[adv]
        with torch.no_grad():
            success = forward(model, embedded).argmax(1) != problem.labels
    return SnappedAttack(ids=adv, changed=(adv != ids).sum(1), success=success,
                         delta=embedded - problem.clean, embedded=embedded)
