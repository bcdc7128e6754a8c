r"""The model-selection recipes (``digits-model-selection``, ``digits-model-selection-shift``,
``imagenet-zoo``), by the modules that hold them; importing this module registers all three.

* :mod:`advtransfer.experiments.recipes.digits_selection`: the digits pools and targets
  (:func:`parse_source`, :func:`source_data`, :func:`target_data`, ...), their configurations
  and the two digits recipes;
* :mod:`advtransfer.experiments.recipes.imagenet_zoo`: the zoo's configuration, data sets,
  weights and its recipe;
* :mod:`advtransfer.experiments.recipes.selection_units`: the stored units they share (full
  fine-tuning truth, linear probe, estimators, the reference's attack and each candidate's
  adversarial scores);
* :mod:`advtransfer.experiments.selection_analysis`: the analysis of a run and its tables.

This module only re-exports the names other modules and the tests use.
"""

from __future__ import annotations

from advtransfer.experiments.recipes.digits_selection import (
    DEFAULT_DIGITS_SOURCES,
    DEFAULT_DIGITS_TARGETS,
    DIGITS_METHODS,
    PRIMARY_METHODS,
    SHIFT_SOURCES,
    SHIFT_TARGETS,
    DigitsModelSelectionConfig,
    DigitsShiftConfig,
    DigitsSource,
    LogitEnsemble,
    _validate_digits,
    parse_source,
    quick_digits,
    quick_shift,
    source_data,
    synthetic_bars,
    target_data,
)
from advtransfer.experiments.recipes.imagenet_zoo import (
    VOC_CLASSES,
    ZOO_DATASETS,
    ZOO_MODELS,
    ImageNetZooConfig,
    Resized,
    _load_zoo_model,
    _read_ground_truth,
    _voc_label,
    imagenet_top1,
    load_zoo_dataset,
    quick_zoo,
)
from advtransfer.experiments.recipes.selection_units import (
    RECIPE_METHODS,
    SelectionAttackFields,
    full_finetune_truth,
)
from advtransfer.experiments.recipes.selection_units import attack_key as _attack
from advtransfer.experiments.recipes.selection_units import holdout as _holdout
from advtransfer.experiments.selection_analysis import (
    BASELINE_LABELS,
    GROUND_TRUTHS,
    PROTOCOL_MEASURES,
    protocol_evaluation,
    seed_agreement,
    selection_summary,
    subsample_intervals,
)
from advtransfer.experiments.selection_analysis import report_labels as _labels

__all__ = [
    "BASELINE_LABELS",
    "DEFAULT_DIGITS_SOURCES",
    "DEFAULT_DIGITS_TARGETS",
    "DIGITS_METHODS",
    "GROUND_TRUTHS",
    "PRIMARY_METHODS",
    "PROTOCOL_MEASURES",
    "RECIPE_METHODS",
    "SHIFT_SOURCES",
    "SHIFT_TARGETS",
    "VOC_CLASSES",
    "ZOO_DATASETS",
    "ZOO_MODELS",
    "DigitsModelSelectionConfig",
    "DigitsShiftConfig",
    "DigitsSource",
    "ImageNetZooConfig",
    "LogitEnsemble",
    "Resized",
    "SelectionAttackFields",
    "full_finetune_truth",
    "imagenet_top1",
    "load_zoo_dataset",
    "parse_source",
    "protocol_evaluation",
    "quick_digits",
    "quick_shift",
    "quick_zoo",
    "seed_agreement",
    "selection_summary",
    "source_data",
    "subsample_intervals",
    "synthetic_bars",
    "target_data",
    # the building blocks the tests check by their former names
    "_attack",
    "_holdout",
    "_labels",
    "_load_zoo_model",
    "_read_ground_truth",
    "_validate_digits",
    "_voc_label",
]
