"""The text data of the ICML version's NLP experiment: six 1,000-example evaluation files.

The authors' repository (kyleliang919/Uncovering-the-Connections-BetweenAdversarial-Transferability-
and-Knowledge-Transferability, commit ``a2fb10f``, folder ``adversarial-transfer-nlp/data/``)
ships the TextFooler evaluation subsets ``ag``, ``mr``, ``imdb``, ``yelp``, ``snli`` and ``mnli``
(1,000 examples each). This module reads them, builds a shared vocabulary, splits them, encodes
them as padded id tensors and builds word-embedding tables for models trained from scratch.

File format
-----------
* Classification (``ag``, ``mr``, ``imdb``, ``yelp``): one example a line, ``LABEL TEXT`` with an
  integer label (0-based), one space, and the text already tokenised with spaces. Like a CSV
  field, a text that is wrapped in double quotes and whose inner quotes are all doubled (``""``)
  is unquoted (``"a ""b"" c"`` -> ``a "b" c``); 737 ``ag`` and 810 ``yelp`` lines are. Texts whose
  quotes are tokens of their own (``" title " was ...`` in ``imdb``) are left as they are. The
  two characters ``\\n`` (Yelp's escaped line breaks, glued to words as in ``.\\n\\nour``) count
  as a space. The authors' ``dataloader.read_corpus`` instead runs TextCNN's ``clean_str``, which
  deletes every character but letters, digits and ``(),!?'``` (so also ``.``, ``-`` and every
  ``"``); this module keeps the punctuation tokens.
* Inference (``snli``, ``mnli``): ``LABEL<TAB>PREMISE<TAB>HYPOTHESIS``. ``snli`` spells its labels
  ``entailment``/``neutral``/``contradiction``; ``mnli`` uses the integers 0/1/2. Both map to
  entailment = 0, neutral = 1, contradiction = 2: the order of the default ``labeldict`` of the
  authors' ``attack_nli.read_data`` (its BERT branch uses contradiction/entailment/neutral), and
  the order the ``mnli`` file itself follows (its label-2 hypotheses negate their premises four
  times as often as the others). Either spelling is accepted in either file.
* Every token is lower-cased (the ``snli``/``mnli`` files are not). An NLI example becomes one
  token list ``premise + ["[SEP]"] + hypothesis``; since text tokens are lower-cased, a literal
  ``[SEP]`` in a text reads as ``[sep]`` and can not be mistaken for the separator.
* Blank lines are skipped; a line with a label but no text, an NLI line without its hypothesis,
  an unknown label and a file without any example raise
  :class:`~advtransfer.errors.AdvTransferError` naming the file and line.

Files on disk
-------------
:func:`load_text` reads ``root/NAME``. A missing file is an error that names the file, the URL it
comes from and ``download=True`` (CLI ``--download``), which fetches it from the authors'
repository at the pinned commit (:data:`TEXT_DATA_URL`) and checks its SHA-256 (a mismatch deletes
the download). An existing file is read whatever its hash, so files of your own in the same
format work; ``verify=True`` checks the official hash. :func:`write_text_fixture` writes small
learnable files in the same format for tests and demonstrations.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advtransfer.errors import AdvTransferError, AdvTransferTypeError
from advtransfer.fileio import atomic_write_text, sha256_file

__all__ = [
    "NLI_CLASSES",
    "PAD",
    "SEP",
    "SPECIAL_TOKENS",
    "TEXT_DATASETS",
    "TEXT_DATA_URL",
    "UNK",
    "TextDataset",
    "TextDatasetInfo",
    "Vocabulary",
    "build_vocabulary",
    "embedding_table",
    "encode",
    "load_text",
    "read_text_file",
    "stratified_split",
    "write_text_fixture",
]

TEXT_DATA_URL = (
    "https://github.com/kyleliang919/Uncovering-the-Connections-BetweenAdversarial-"
    "Transferability-and-Knowledge-Transferability/raw/a2fb10f/adversarial-transfer-nlp/data"
)
"""Where ``download=True`` fetches ``NAME`` from (``TEXT_DATA_URL/NAME``), pinned to commit
``a2fb10f`` of the authors' repository."""

PAD, UNK, SEP = "[PAD]", "[UNK]", "[SEP]"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, SEP)
"""Ids 0, 1 and 2 of every :class:`Vocabulary`: padding, unknown word, premise/hypothesis
separator."""

NLI_CLASSES: tuple[str, ...] = ("entailment", "neutral", "contradiction")
"""NLI labels in label order (0, 1, 2); see the module docstring for where the order comes from."""

_SENTIMENT = ("negative", "positive")
_TASKS = ("classification", "nli")


@dataclass(frozen=True)
class TextDatasetInfo:
    """Static facts about one of the authors' text files: ``task`` is ``"classification"`` or
    ``"nli"``, ``classes`` the class names in label order, ``sha256`` the hash of the official
    file and ``size`` its number of examples."""

    name: str
    title: str
    task: str
    classes: tuple[str, ...]
    sha256: str
    size: int = 1000

    @property
    def url(self) -> str:
        """The official file's download URL."""
        return f"{TEXT_DATA_URL}/{self.name}"


def _info(name: str, title: str, task: str, classes: tuple[str, ...], sha: str) -> TextDatasetInfo:
    return TextDatasetInfo(name=name, title=title, task=task, classes=classes, sha256=sha)


TEXT_DATASETS: dict[str, TextDatasetInfo] = {
    "ag": _info("ag", "AG News topic", "classification",
                ("world", "sports", "business", "sci/tech"),
                "b3e1164c4abf303651f84da8c66905c937e3a7758fe8672ad8a9f1288c334c53"),
    "mr": _info("mr", "MR movie-review sentiment", "classification", _SENTIMENT,
                "6d36d344c14cece04ec67bcc1cef243b8c067bfd20d212345556aa67eb83eed2"),
    "imdb": _info("imdb", "IMDB review sentiment", "classification", _SENTIMENT,
                  "a99fc14c1373e01cdc6a085c8e7fa92cd9c25ffa54a8ce32d360f921a3630e81"),
    "yelp": _info("yelp", "Yelp review polarity", "classification", _SENTIMENT,
                  "befbfa6f4737ed813f0830bcab7ce9df1fa141a0648bab04f894c9318c8231fc"),
    "snli": _info("snli", "SNLI inference", "nli", NLI_CLASSES,
                  "83cd1793c0900b9aa87f31b95757b6b874184e4c30d4a78e9b3e5a5c1013c1ed"),
    "mnli": _info("mnli", "MultiNLI inference", "nli", NLI_CLASSES,
                  "772524d991fda03ba4e07c79ecf9ec937cf80062f1a1404f75683664b6463df3"),
}
"""The six files of the authors' NLP experiment (AG News classes in AG's order: World, Sports,
Business, Sci/Tech; sentiment 0 = negative, 1 = positive)."""


def _dataset_info(name: Any) -> TextDatasetInfo:
    if not isinstance(name, str) or name not in TEXT_DATASETS:
        raise AdvTransferError(
            f"unknown text dataset {name!r}; known: {', '.join(TEXT_DATASETS)}")
    return TEXT_DATASETS[name]


# --------------------------------------------------------------------------------------------
# Datasets and reading
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TextDataset:
    """Examples of one text dataset: ``texts[i]`` is the token tuple of example ``i`` (NLI:
    ``premise + ("[SEP]",) + hypothesis``), ``labels`` a read-only ``int64`` array of labels in
    ``0..len(classes)-1``, ``task`` ``"classification"`` or ``"nli"``."""

    name: str
    task: str
    texts: tuple[tuple[str, ...], ...]
    labels: np.ndarray
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        raw = np.asarray(self.labels).reshape(-1)
        if raw.size and (raw.dtype.kind not in "iuf" or np.any(raw != np.round(raw))):
            raise AdvTransferError(f"labels of dataset {self.name!r} must be integers")
        labels = raw.astype(np.int64)
        if self.task not in _TASKS:
            raise AdvTransferError(f"task must be one of {list(_TASKS)}, got {self.task!r}")
        if len(labels) != len(self.texts):
            raise AdvTransferError(
                f"{len(self.texts)} texts but {len(labels)} labels in dataset {self.name!r}")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(self.classes)):
            raise AdvTransferError(
                f"labels of dataset {self.name!r} must be in 0..{len(self.classes) - 1}")
        labels.setflags(write=False)
        object.__setattr__(self, "texts", tuple(tuple(t) for t in self.texts))
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "labels", labels)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Sequence[int] | np.ndarray) -> TextDataset:
        """The examples at ``indices`` (e.g. one part of :func:`stratified_split`), in that
        order."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        return TextDataset(self.name, self.task, tuple(self.texts[i] for i in idx.tolist()),
                           self.labels[idx], self.classes)


def _tokens(text: str) -> list[str]:
    """Lower-cased space-separated tokens; a literal ``\\n`` separates tokens too."""
    return text.replace("\\n", " ").lower().split()


def _unquote(text: str) -> str:
    """``text`` without CSV quoting (wrapped in ``"``, inner ``""`` -> ``"``), else unchanged."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        inner = text[1:-1]
        if '"' not in inner.replace('""', ""):
            return inner.replace('""', '"')
    return text


def _parse_label(raw: str, classes: tuple[str, ...], nli: bool) -> int | None:
    """The label id of ``raw``: an integer in range, or (NLI) a class name; ``None`` if
    neither."""
    if raw.isascii() and raw.isdigit():
        value = int(raw)
        return value if value < len(classes) else None
    if nli and raw.lower() in classes:
        return classes.index(raw.lower())
    return None


def _label_expectation(info: TextDatasetInfo) -> str:
    k = len(info.classes)
    named = ", ".join(f"{i} = {c}" for i, c in enumerate(info.classes))
    if info.task == "nli":
        return f"a label in 0..{k - 1} or one of {list(info.classes)} ({named})"
    return f"an integer label in 0..{k - 1} ({named})"


def _parse_line(line: str, info: TextDatasetInfo) -> tuple[int | None, tuple[str, ...] | str]:
    """``(label, tokens)`` of one line, or ``(None, problem)``."""
    nli = info.task == "nli"
    if nli:
        fields = line.split("\t")
        if len(fields) != 3 or not _tokens(fields[1]) or not _tokens(fields[2]):
            what = "no hypothesis" if len(fields) < 3 else "an empty premise or hypothesis"
            if len(fields) > 3:
                what = f"{len(fields)} tab-separated fields"
            return None, f"{what}; expected LABEL<TAB>PREMISE<TAB>HYPOTHESIS"
        raw, tokens = fields[0].strip(), (*_tokens(fields[1]), SEP, *_tokens(fields[2]))
    else:
        raw, _, text = line.partition(" ")
        if not _tokens(_unquote(text.strip())):
            return None, "a label without text; expected 'LABEL TEXT' (one space after LABEL)"
        tokens = tuple(_tokens(_unquote(text.strip())))
    label = _parse_label(raw, info.classes, nli)
    if label is None:
        return None, f"unknown label {raw[:40]!r}; expected {_label_expectation(info)}"
    return label, tokens


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AdvTransferError(f"text file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AdvTransferError(
            f"cannot read {path} as UTF-8 text ({type(exc).__name__}: {exc})") from exc
    return text.removeprefix("\ufeff").split("\n")


def read_text_file(path: str | os.PathLike[str], name: str) -> TextDataset:
    """Parse ``path`` in the format of the authors' file ``name`` (one of :data:`TEXT_DATASETS`;
    it fixes the format and the classes) into a :class:`TextDataset`; see the module docstring
    for the format, the unquoting and the lower-casing.

    Raises:
        AdvTransferError: unknown ``name``; an unreadable file; a line without text or without
            hypothesis, or with an unknown label (message: file, line number, what was
            expected); a file without any example.
    """
    info = _dataset_info(name)
    path = Path(path)
    texts: list[tuple[str, ...]] = []
    labels: list[int] = []
    for number, line in enumerate(_read_lines(path), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        label, parsed = _parse_line(line, info)
        if label is None:
            raise AdvTransferError(f"{path}, line {number}: {parsed} (format of {name!r})")
        labels.append(label)
        texts.append(tuple(parsed))
    if not texts:
        raise AdvTransferError(
            f"{path} holds no example; expected lines in the format of {name!r} "
            f"({'LABEL<TAB>PREMISE<TAB>HYPOTHESIS' if info.task == 'nli' else 'LABEL TEXT'})")
    return TextDataset(name, info.task, tuple(texts), np.asarray(labels, np.int64), info.classes)


# --------------------------------------------------------------------------------------------
# Files on disk and downloads
# --------------------------------------------------------------------------------------------


def _download(info: TextDatasetInfo, path: Path) -> None:
    """Fetch ``info.url`` to ``path`` and check its SHA-256; on a mismatch delete it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(info.url, str(path), progress=False)
    except (OSError, RuntimeError) as exc:
        path.unlink(missing_ok=True)
        raise AdvTransferError(f"downloading {info.url} failed ({type(exc).__name__}: {exc}); "
                               f"nothing was written to {path}") from exc
    got = sha256_file(path)
    if got != info.sha256:
        path.unlink(missing_ok=True)
        raise AdvTransferError(
            f"the file downloaded from {info.url} has SHA-256 {got}, expected {info.sha256}; "
            f"it was deleted ({path}). Retry, or fetch the file by hand.")


def load_text(name: str, root: str | os.PathLike[str], *, download: bool = False,
              verify: bool = False) -> TextDataset:
    """Read the authors' file ``name`` from ``root/name`` (see :func:`read_text_file`).

    A missing file is fetched from ``TEXT_DATA_URL/name`` with ``download=True`` (CLI
    ``--download``) and checked against :attr:`TextDatasetInfo.sha256` (a mismatch deletes it and
    raises). An existing file is read as it is; ``verify=True`` also checks its SHA-256.

    Raises:
        AdvTransferError: unknown ``name``; missing file without ``download`` (names the file,
            the URL and ``--download``); failed download; hash mismatch; malformed file.
    """
    info = _dataset_info(name)
    if not isinstance(root, (str, os.PathLike)):
        raise AdvTransferTypeError(f"root must be a path, got {type(root).__name__}")
    path = Path(root).expanduser() / name
    if not path.is_file():
        if not download:
            raise AdvTransferError(
                f"the {info.title} file {path} is missing. Pass download=True (CLI: --download) "
                f"to fetch it from {info.url}, or download it yourself into {path.parent}.")
        _download(info, path)
    elif verify and (got := sha256_file(path)) != info.sha256:
        raise AdvTransferError(
            f"{path} has SHA-256 {got}, expected {info.sha256} (the authors' file, {info.url}); "
            "delete it and rerun with --download, or pass verify=False to use your own file.")
    return read_text_file(path, name)


# --------------------------------------------------------------------------------------------
# Vocabulary and encoding
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Vocabulary:
    """Tokens by id: ``tokens[0:3]`` are :data:`SPECIAL_TOKENS` (``[PAD]`` = 0, ``[UNK]`` = 1,
    ``[SEP]`` = 2), then the words; ``counts[i]`` is how often ``tokens[i]`` occurred in the
    datasets it was built from (0 for the special tokens)."""

    tokens: tuple[str, ...]
    counts: tuple[int, ...]
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if tuple(self.tokens[:3]) != SPECIAL_TOKENS or len(self.tokens) != len(self.counts):
            raise AdvTransferError(
                f"a Vocabulary starts with {list(SPECIAL_TOKENS)} and has one count per token")
        index = {token: i for i, token in enumerate(self.tokens)}
        if len(index) != len(self.tokens):
            raise AdvTransferError("a Vocabulary's tokens must be distinct")
        object.__setattr__(self, "index", index)

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: object) -> bool:
        return token in self.index

    def ids(self, tokens: Iterable[str]) -> list[int]:
        """The id of each token; tokens not in the vocabulary get ``[UNK]`` (1)."""
        return [self.index.get(t, 1) for t in tokens]


def _check_datasets(datasets: Any) -> list[TextDataset]:
    if isinstance(datasets, TextDataset):
        datasets = [datasets]
    if not isinstance(datasets, Sequence) or not datasets \
            or not all(isinstance(d, TextDataset) for d in datasets):
        raise AdvTransferTypeError("datasets must be a non-empty sequence of TextDataset")
    return list(datasets)


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise AdvTransferTypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise AdvTransferError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def build_vocabulary(datasets: Sequence[TextDataset] | TextDataset, *, min_count: int = 1,
                     max_size: int | None = None) -> Vocabulary:
    """The shared vocabulary of ``datasets``: the special tokens, then every word occurring at
    least ``min_count`` times in all their texts together, by count (descending) then token
    (ascending), cut to ``max_size`` entries in all (special tokens included) if given."""
    sets = _check_datasets(datasets)
    min_count = _check_int(min_count, "min_count", 1)
    if max_size is not None:
        max_size = _check_int(max_size, "max_size", len(SPECIAL_TOKENS) + 1)
    counts: Counter[str] = Counter()
    for dataset in sets:
        for text in dataset.texts:
            counts.update(text)
    for special in SPECIAL_TOKENS:
        counts.pop(special, None)
    words = sorted((item for item in counts.items() if item[1] >= min_count),
                   key=lambda item: (-item[1], item[0]))
    if max_size is not None:
        words = words[: max_size - len(SPECIAL_TOKENS)]
    return Vocabulary(SPECIAL_TOKENS + tuple(w for w, _ in words),
                      (0,) * len(SPECIAL_TOKENS) + tuple(c for _, c in words))


def _pair_budget(n_premise: int, n_hypothesis: int, budget: int) -> tuple[int, int]:
    """Tokens kept of premise and hypothesis when at most ``budget`` fit: all if they fit, else
    the longer one is cut first until both are equally long, then both alternately (the
    hypothesis gets ``budget // 2`` on a tie), as BERT's ``_truncate_seq_pair``."""
    keep_h = min(n_hypothesis, max(budget - n_premise, budget // 2))
    return min(n_premise, budget - keep_h), keep_h


def _truncate(text: tuple[str, ...], task: str, max_len: int) -> tuple[str, ...]:
    if task != "nli" or SEP not in text:
        return text[:max_len]
    cut = text.index(SEP)
    premise, hypothesis = text[:cut], text[cut + 1:]
    keep_p, keep_h = _pair_budget(len(premise), len(hypothesis), max_len - 1)
    return (*premise[:keep_p], SEP, *hypothesis[:keep_h])


def encode(dataset: TextDataset, vocab: Vocabulary,
           max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, lengths)``: ``ids`` a ``LongTensor [N, max_len]`` of token ids (unknown words ->
    ``[UNK]`` = 1) padded on the right with ``[PAD]`` = 0, ``lengths`` the number of real tokens.

    Texts longer than ``max_len`` keep their first ``max_len`` tokens. An NLI example keeps its
    ``[SEP]`` and shares the other ``max_len - 1`` places between premise and hypothesis as
    BERT's pair truncation does: the longer part loses its last tokens first until both fit
    (``max_len`` must then be >= 3, so each part keeps at least one token).
    """
    if not isinstance(dataset, TextDataset) or not isinstance(vocab, Vocabulary):
        raise AdvTransferTypeError("encode takes a TextDataset and a Vocabulary")
    max_len = _check_int(max_len, "max_len", 3 if dataset.task == "nli" else 1)
    ids = torch.zeros((len(dataset), max_len), dtype=torch.long)
    lengths = torch.zeros(len(dataset), dtype=torch.long)
    for row, text in enumerate(dataset.texts):
        kept = vocab.ids(_truncate(text, dataset.task, max_len))
        ids[row, : len(kept)] = torch.tensor(kept, dtype=torch.long)
        lengths[row] = len(kept)
    return ids, lengths


# --------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------


def _check_fractions(fractions: Any) -> tuple[float, float, float]:
    try:
        values = tuple(float(f) for f in fractions)
    except (TypeError, ValueError):
        raise AdvTransferTypeError(
            f"fractions must be three numbers (train, val, test), got {fractions!r}") from None
    if len(values) != 3:
        raise AdvTransferError(
            f"fractions must be three numbers (train, val, test), got {len(values)}")
    if not all(0.0 < f < 1.0 for f in values):
        raise AdvTransferError(f"each of fractions must be in (0, 1), got {values}")
    if not math.isclose(sum(values), 1.0, abs_tol=1e-6):
        raise AdvTransferError(f"fractions must sum to 1, got {values} (sum {sum(values):g})")
    return values  # type: ignore[return-value]


def stratified_split(labels: Sequence[int] | np.ndarray, *,
                     fractions: Sequence[float] = (0.6, 0.2, 0.2),
                     seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded stratified ``(train_idx, val_idx, test_idx)`` (sorted ``int64`` positions).

    Each class's positions are shuffled (``numpy.random.default_rng(seed)``, classes in
    ascending order) and cut at ``round(n_c * (f_train))`` and ``round(n_c * (f_train +
    f_val))``, so every part holds each class within one example of ``fraction * n_c`` (a class
    of very few examples may be missing from a part). The parts are disjoint and cover all
    positions; the same ``labels`` and ``seed`` give the same split.
    """
    f_train, f_val, _ = _check_fractions(fractions)
    seed = _check_int(seed, "seed", 0)
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) == 0:
        raise AdvTransferError(f"labels must be a non-empty 1-D sequence, got shape {y.shape}")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for cls in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == cls))
        n = len(members)
        cuts = [0, int(np.floor(n * f_train + 0.5)), int(np.floor(n * (f_train + f_val) + 0.5)), n]
        for k in range(3):
            parts[k].append(members[cuts[k]: cuts[k + 1]])
    train, val, test = (np.sort(np.concatenate(p)).astype(np.int64) for p in parts)
    return train, val, test


# --------------------------------------------------------------------------------------------
# Embedding tables
# --------------------------------------------------------------------------------------------


def _random_table(size: int, dim: int, seed: int) -> np.ndarray:
    """Rows ~ N(0, 1/dim) (norm about 1) from ``default_rng(seed)``; row 0 zero."""
    table = np.random.default_rng(seed).normal(0.0, 1.0 / math.sqrt(dim), (size, dim))
    table[0] = 0.0
    return table


def _corpus_ids(vocab: Vocabulary, datasets: list[TextDataset], window: int) -> np.ndarray:
    """All texts' ids in one array, each text followed by ``window`` ``[PAD]`` ids so that no
    window spans two texts."""
    gap = [0] * window
    ids: list[int] = []
    for dataset in datasets:
        for text in dataset.texts:
            ids += vocab.ids(text)
            ids += gap
    return np.asarray(ids, dtype=np.int64)


def _ppmi(ids: np.ndarray, size: int, window: int) -> Any:
    """Positive PMI of words co-occurring within ``window`` tokens (both directions, special
    tokens left out): ``max(0, log(#(w, c) * D / (#(w) * #(c))))`` with ``#(w) = sum_c #(w,
    c)`` and ``D = sum #(w, c)``, as a ``scipy.sparse`` CSR matrix ``[size, size]``."""
    from scipy import sparse

    first = len(SPECIAL_TOKENS)
    rows, cols = [], []
    for d in range(1, window + 1):
        a, b = ids[:-d], ids[d:]
        keep = (a >= first) & (b >= first)
        rows += [a[keep], b[keep]]
        cols += [b[keep], a[keep]]
    r, c = np.concatenate(rows), np.concatenate(cols)
    counts = sparse.coo_matrix((np.ones(len(r)), (r, c)), shape=(size, size)).tocsr()
    counts.sum_duplicates()
    marginal = np.asarray(counts.sum(axis=1)).ravel()
    coo = counts.tocoo()
    pmi = np.log(coo.data * counts.sum() / (marginal[coo.row] * marginal[coo.col]))
    keep = pmi > 0
    return sparse.csr_matrix((pmi[keep], (coo.row[keep], coo.col[keep])), shape=(size, size))


def _svd_rows(ppmi: Any, fitted: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """Unit-norm rows ``U_k sqrt(S_k)`` (zero-padded to ``dim`` columns) of the truncated SVD of
    the PPMI rows ``fitted``; rows that come out zero stay zero (the caller falls back)."""
    from sklearn.utils.extmath import randomized_svd

    sub = ppmi[fitted]
    k = min(dim, sub.shape[0], sub.shape[1])
    u, s, _ = randomized_svd(sub, n_components=k, n_iter=7, random_state=seed)
    vectors = np.zeros((len(fitted), dim))
    vectors[:, :k] = u * np.sqrt(s)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 1e-12)


def embedding_table(vocab: Vocabulary, datasets: Sequence[TextDataset] | TextDataset, *,
                    dim: int, method: str, seed: int, window: int = 5,
                    min_count: int = 2) -> torch.Tensor:
    """A ``float32`` table ``[len(vocab), dim]`` of word vectors for ``vocab``; row 0
    (``[PAD]``) is exactly zero and no other row is, so a model can tell padding by it.

    ``method="random"``: every other row ~ N(0, I/dim) from ``numpy.random.default_rng(seed)``.
    ``method="svd"`` (no labels used): the positive PMI matrix of words co-occurring within
    ``window`` tokens in the texts of ``datasets`` (see :func:`_ppmi`) is factored by a
    truncated SVD (``sklearn.utils.extmath.randomized_svd``, ``random_state=seed``) into ``U_k
    sqrt(S_k)`` with ``k = min(dim, ...)``, rows scaled to unit norm. Words occurring fewer than
    ``min_count`` times, words without any co-occurrence and the special tokens keep the rows of
    the ``"random"`` table for the same ``seed``.
    """
    if not isinstance(vocab, Vocabulary):
        raise AdvTransferTypeError("vocab must be a Vocabulary (see build_vocabulary)")
    sets = _check_datasets(datasets)
    dim = _check_int(dim, "dim", 1)
    seed = _check_int(seed, "seed", 0)
    window = _check_int(window, "window", 1)
    min_count = _check_int(min_count, "min_count", 1)
    if method not in ("random", "svd"):
        raise AdvTransferError(f"method must be one of ['random', 'svd'], got {method!r}")
    table = _random_table(len(vocab), dim, seed)
    if method == "svd":
        ids = _corpus_ids(vocab, sets, window)
        ppmi = _ppmi(ids, len(vocab), window)
        counts = np.bincount(ids, minlength=len(vocab))
        has_context = np.diff(ppmi.indptr) > 0
        fitted = np.flatnonzero((counts >= min_count) & has_context)
        fitted = fitted[fitted >= len(SPECIAL_TOKENS)]
        if len(fitted):
            rows = _svd_rows(ppmi, fitted, dim, seed)
            ok = np.linalg.norm(rows, axis=1) > 0
            table[fitted[ok]] = rows[ok]
    return torch.from_numpy(table.astype(np.float32))


# --------------------------------------------------------------------------------------------
# Fixture files
# --------------------------------------------------------------------------------------------

_SHARED_WORDS = ("the a of and to in is it that this was for on with as at by from".split()
                 + ["."] * 2 + [","] * 2)
_CLASS_WORDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "ag": (("government", "minister", "election", "war", "president", "talks", "troops"),
           ("game", "season", "team", "coach", "win", "league", "cup"),
           ("shares", "profit", "market", "stocks", "company", "oil", "prices"),
           ("software", "internet", "computer", "space", "research", "microsoft", "web")),
    "sentiment": (("bad", "boring", "worst", "awful", "dull", "waste", "terrible"),
                  ("great", "wonderful", "best", "fun", "excellent", "loved", "superb")),
    "nli": (("also", "indeed", "certainly", "same", "truly", "does", "is"),
            ("maybe", "perhaps", "later", "because", "might", "probably", "tomorrow"),
            ("not", "never", "nobody", "no", "nothing", "cannot", "none")),
}
_PREMISE_WORDS = ("man woman dog child street park car river house table red blue walks "
                  "sits runs plays holds looks crowd ball").split()


def _fixture_text(rng: np.random.Generator, words: tuple[str, ...]) -> str:
    """5-15 tokens, about 40 % from ``words`` (the class's), the others shared."""
    n = int(rng.integers(5, 16))
    own = rng.random(n) < 0.4
    return " ".join(str(rng.choice(words)) if o else str(rng.choice(_SHARED_WORDS)) for o in own)


def _fixture_line(name: str, label: int, rng: np.random.Generator) -> str:
    info = TEXT_DATASETS[name]
    if info.task == "nli":
        premise = [str(w) for w in rng.choice(_PREMISE_WORDS, size=int(rng.integers(5, 11)))]
        kept = [str(w) for w in rng.choice(premise, size=3)]
        cue = [str(w) for w in rng.choice(_CLASS_WORDS["nli"][label], size=3)]
        hypothesis = (kept[:1] + cue + kept[1:] + ["."])
        shown = info.classes[label] if name == "snli" else str(label)
        return f"{shown}\t{' '.join(premise).capitalize()} .\t{' '.join(hypothesis).capitalize()}"
    kind = "ag" if name == "ag" else "sentiment"
    text = _fixture_text(rng, _CLASS_WORDS[kind][label])
    if name in ("ag", "yelp") and rng.random() < 0.3:  # CSV-quoted, as in the real files
        text = '"' + text.replace(" . ", ' "" . ', 1) + '"'
    return f"{label} {text}"


def write_text_fixture(root: str | os.PathLike[str], name: str, *, n_per_class: int = 20,
                       seed: int = 0) -> Path:
    """Write ``root/name``: ``n_per_class`` examples of each class of ``name`` in the format of
    the authors' file (shuffled; ``snli`` with label names, the others with integers) and
    return its path.

    Classification texts are 5-15 tokens, about 40 % drawn from words of their class (topic
    words for ``ag``, sentiment words otherwise) and the rest from shared function words; about
    30 % of ``ag``/``yelp`` lines are CSV-quoted like the real ones. An NLI premise is 5-10
    capitalised scene words; its hypothesis repeats three of them around three cue words of the
    class (negations for contradiction, hedges for neutral). A bag-of-words model learns every
    task. Same arguments, same bytes; the official SHA-256 never matches.
    """
    _dataset_info(name)
    n_per_class = _check_int(n_per_class, "n_per_class", 1)
    seed = _check_int(seed, "seed", 0)
    rng = np.random.default_rng(seed)
    k = len(TEXT_DATASETS[name].classes)
    labels = rng.permutation(np.repeat(np.arange(k), n_per_class))
    lines = [_fixture_line(name, int(label), rng) for label in labels]
    return atomic_write_text(Path(root) / name, "\n".join(lines) + "\n")
