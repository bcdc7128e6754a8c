"""The model-selection methods: their ids, what each is computed from, and its one display name.

A method has an *id* (what ``rank(methods=...)``, ``--methods``, the CSV/JSON keys and the
recipes' ``--set methods=`` take) and one *label* (:func:`method_label`), the name every report
table, plot, README table and terminal table of tau values shows. Both come from here and
nowhere else (docs/design.md §3; docs/recipes.md, "Method names").

Adversarial ids name the metric, the space and the direction: ``alpha1`` is alpha1 of attacks
crafted on the reference (the target model) and applied to the candidate (``t2s``, the authors'
image protocol; ``alpha1_t2s`` is the same method), ``alpha1_s2t`` the reverse, and
``_features`` measures the candidate's penultimate features instead of its outputs.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "ADVERSARIAL_FEATURE_METHODS",
    "ADVERSARIAL_METHODS",
    "BASE_FEATURE_METHODS",
    "COMBINED_METHODS",
    "DEFAULT_METHODS",
    "DEPRECATED_METHODS",
    "ESTIMATOR_LABELS",
    "ESTIMATOR_METHODS",
    "FEATURE_METHODS",
    "GRADIENT_METHODS",
    "METHODS",
    "OUTPUT_METHODS",
    "PED_METHODS",
    "POOL_METHODS",
    "RANK_AVERAGE_METHODS",
    "method_label",
    "needed_methods",
]

#: Adversarial methods: name -> (metric, direction). "t2s": attack crafted on the reference
#: (target model) and applied to the candidate; "s2t": crafted on the candidate, applied to the
#: reference. The plain names are the t2s direction (the authors' image protocol).
ADVERSARIAL_METHODS: dict[str, tuple[str, str]] = {
    "alpha1": ("alpha1", "t2s"),
    "alpha2": ("alpha2", "t2s"),
    "combined": ("combined", "t2s"),
    "alpha1_t2s": ("alpha1", "t2s"),
    "alpha2_t2s": ("alpha2", "t2s"),
    "combined_t2s": ("combined", "t2s"),
    "alpha1_s2t": ("alpha1", "s2t"),
    "alpha2_s2t": ("alpha2", "s2t"),
    "combined_s2t": ("combined", "s2t"),
    "alpha1_features": ("alpha1", "t2s"),
    "alpha2_features": ("alpha2", "t2s"),
    "combined_features": ("combined", "t2s"),
    "alpha1_features_s2t": ("alpha1", "s2t"),
    "alpha2_features_s2t": ("alpha2", "s2t"),
    "combined_features_s2t": ("combined", "s2t"),
}
#: The adversarial methods measured on the candidate's *penultimate features* h_S(x) (the
#: representation the fine-tuned head is fitted on) instead of its outputs f_S(x); the
#: reference side is always the reference's outputs f_T(x).
ADVERSARIAL_FEATURE_METHODS: tuple[str, ...] = tuple(m for m in ADVERSARIAL_METHODS
                                                     if "_features" in m)
#: Rank-average combinations: name -> the methods whose normalised ranks are averaged
#: (:func:`advtransfer.selection.rank_average`).
RANK_AVERAGE_METHODS: dict[str, tuple[str, ...]] = {
    "alpha1_logme_rankavg": ("alpha1", "logme"),
    "alpha1_leep_rankavg": ("alpha1", "leep"),
    "alpha1_features_logme_rankavg": ("alpha1_features", "logme"),
    "alpha1_features_leep_rankavg": ("alpha1_features", "leep"),
    "alpha1_features_sfda_rankavg": ("alpha1_features", "sfda"),
}
#: Estimators computed on the penultimate features (input of the last ``nn.Linear`` called),
#: each a function of (features, labels) in :mod:`advtransfer.estimators`.
BASE_FEATURE_METHODS: tuple[str, ...] = ("logme", "hscore", "regularized_hscore", "transrate",
                                         "gbc", "nleep", "parc", "sfda", "knn", "lfc", "tmi")
#: PED (:func:`advtransfer.estimators.ped.ped`) wrapped around each of them: ``ped_<method>``
#: scores the features after PED's simulated class repulsion.
PED_METHODS: tuple[str, ...] = tuple(f"ped_{m}" for m in BASE_FEATURE_METHODS)
#: Estimators whose score is a min-max normalisation over the *pool* of candidates: name -> its
#: raw per-candidate parts (each part is itself a method, a function of one candidate's
#: features, reported beside the pooled score). A candidate's pooled score depends on the
#: other candidates in the pool.
POOL_METHODS: dict[str, tuple[str, ...]] = {
    "ncti": ("ncti_vc", "ncti_seli", "ncti_ncc"),
    "etran": ("etran_energy", "etran_lda", "etran_svd"),
}
#: Every estimator computed on the penultimate features, the pooled methods' parts included.
FEATURE_METHODS: tuple[str, ...] = (*BASE_FEATURE_METHODS, *PED_METHODS,
                                    *(p for parts in POOL_METHODS.values() for p in parts))
#: Estimators computed on the candidate's outputs: softmax probabilities (LEEP), arg-max (NCE).
OUTPUT_METHODS: tuple[str, ...] = ("leep", "nce")
#: Estimators computed on the candidate's per-sample parameter gradients (its linearisation).
GRADIENT_METHODS: tuple[str, ...] = ("lgc",)
#: Methods computed over the pool from other methods' per-candidate scores: name -> components
#: (the rank averages and the pool-normalised estimators).
COMBINED_METHODS: dict[str, tuple[str, ...]] = {**RANK_AVERAGE_METHODS, **POOL_METHODS}
#: Every method :func:`advtransfer.selection.rank` knows.
METHODS: tuple[str, ...] = (*ADVERSARIAL_METHODS, *FEATURE_METHODS, *OUTPUT_METHODS,
                            *GRADIENT_METHODS, *COMBINED_METHODS, "source_accuracy",
                            "linear_probe", "finetune")
#: Former names of methods: old -> new (accepted with a DeprecationWarning). ``finetune`` was
#: the linear probe, a name the recipes use for full fine-tuning.
DEPRECATED_METHODS: dict[str, str] = {"finetune": "linear_probe"}
#: The methods :func:`advtransfer.selection.rank` computes when ``methods`` is not given
#: (``source_accuracy`` is added when the caller passes ``source_accuracy``).
DEFAULT_METHODS: tuple[str, ...] = ("alpha1", "alpha2", "combined", "logme", "leep", "nce",
                                    "hscore", "regularized_hscore", "transrate", "gbc")
#: The display names of the methods that are not adversarial or combinations (the names their
#: papers use).
ESTIMATOR_LABELS: dict[str, str] = {
    "logme": "LogME", "leep": "LEEP", "nce": "NCE", "hscore": "H-score",
    "regularized_hscore": "regularized H-score", "transrate": "TransRate", "gbc": "GBC",
    "nleep": "NLEEP", "parc": "PARC", "sfda": "SFDA", "knn": "k-NN accuracy", "lfc": "LFC",
    "lgc": "LGC", "tmi": "TMI", "ncti": "NCTI", "etran": "ETran",
    "ncti_vc": "NCTI part: variability collapse", "ncti_seli": "NCTI part: SELI geometry",
    "ncti_ncc": "NCTI part: nearest-centre accuracy", "etran_energy": "ETran part: energy",
    "etran_lda": "ETran part: LDA", "etran_svd": "ETran part: SVD",
    "source_accuracy": "source accuracy (data-free baseline)",
    "linear_probe": "linear probe (a head on the penultimate features)",
}
ESTIMATOR_METHODS: tuple[str, ...] = (*FEATURE_METHODS, *OUTPUT_METHODS, *GRADIENT_METHODS)


def needed_methods(methods: Iterable[str]) -> list[str]:
    """The methods to compute for ``methods``: the components of each combination
    (:data:`COMBINED_METHODS`, recursively), then the method itself, each once, in order."""
    out: dict[str, None] = {}

    def add(method: str) -> None:
        for component in COMBINED_METHODS.get(method, ()):
            add(component)
        out[method] = None

    for m in methods:
        add(m)
    return list(out)


_DIRECTIONS = {"t2s": "target -> source", "s2t": "source -> target"}


def method_label(method: str, *, squared: bool = False) -> str:
    """The one display name of a method id, e.g. ``alpha1_s2t`` -> ``alpha1 (source -> target)``,
    ``alpha1_features`` -> ``alpha1 (features, target -> source)``, ``regularized_hscore`` ->
    ``regularized H-score``, ``alpha1_logme_rankavg`` -> ``rank average of alpha1 (target ->
    source) and LogME``. ``squared=True`` marks alpha2 and combined as squared (the authors'
    convention, :func:`advtransfer.metrics.check_convention`). An unknown id is returned as it
    is (a recipe's own column)."""
    if method in ADVERSARIAL_METHODS:
        metric, direction = ADVERSARIAL_METHODS[method]
        space = "features, " if method in ADVERSARIAL_FEATURE_METHODS else ""
        power = "²" if squared and metric != "alpha1" else ""
        return f"{metric}{power} ({space}{_DIRECTIONS[direction]})"
    if method in RANK_AVERAGE_METHODS:
        parts = [method_label(m, squared=squared) for m in RANK_AVERAGE_METHODS[method]]
        return f"rank average of {' and '.join(parts)}"
    method = DEPRECATED_METHODS.get(method, method)
    if method in PED_METHODS:
        return f"PED + {method_label(method.removeprefix('ped_'))}"
    return ESTIMATOR_LABELS.get(method, method)
