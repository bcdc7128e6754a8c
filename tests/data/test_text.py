"""Text data of the NLP experiment: reading the authors' format, downloads (network replaced),
vocabulary, encoding, stratified splits, embedding tables and the fixture writer.

No test reads the real files: each writes small files in the same format under ``tmp_path``."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import urllib.error
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from advtransfer.data import text as text_module
from advtransfer.data.text import (
    NLI_CLASSES,
    SEP,
    TEXT_DATASETS,
    TextDataset,
    Vocabulary,
    build_vocabulary,
    embedding_table,
    encode,
    load_text,
    read_text_file,
    stratified_split,
    write_text_fixture,
)
from advtransfer.errors import AdvTransferError, AdvTransferTypeError

REPO = ("https://github.com/kyleliang919/Uncovering-the-Connections-BetweenAdversarial-"
        "Transferability-and-Knowledge-Transferability")


def _write(path: Path, content: str) -> Path:
    path.write_bytes(content.encode("utf-8"))
    return path


def _dataset(texts: list[str], labels: list[int] | None = None, task: str = "classification",
             classes: tuple[str, ...] = ("a", "b")) -> TextDataset:
    labels = [0] * len(texts) if labels is None else labels
    return TextDataset("hand", task, tuple(tuple(t.split()) for t in texts),
                       np.asarray(labels), classes)


# --------------------------------------------------------------------------------------------
# The table of datasets
# --------------------------------------------------------------------------------------------


def test_the_six_datasets_and_their_facts() -> None:
    assert list(TEXT_DATASETS) == ["ag", "mr", "imdb", "yelp", "snli", "mnli"]
    for name, info in TEXT_DATASETS.items():
        assert info.name == name and info.size == 1000
        assert len(info.sha256) == 64 and int(info.sha256, 16) >= 0
        assert info.url == f"{REPO}/raw/a2fb10f/adversarial-transfer-nlp/data/{name}"
    tasks = {name: (info.task, len(info.classes)) for name, info in TEXT_DATASETS.items()}
    assert tasks == {"ag": ("classification", 4), "mr": ("classification", 2),
                     "imdb": ("classification", 2), "yelp": ("classification", 2),
                     "snli": ("nli", 3), "mnli": ("nli", 3)}
    assert TEXT_DATASETS["snli"].classes == ("entailment", "neutral", "contradiction")
    assert len({info.sha256 for info in TEXT_DATASETS.values()}) == 6


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def test_classification_lines_are_unquoted_lowercased_and_split(tmp_path: Path) -> None:
    content = (
        '1 "Braves beat ""Astros"" 6 - 5 . \\n\\nOur view"\r\n'  # CSV-quoted, Yelp's \n
        "\n"  # blank lines are skipped
        '0 " who will love my children " saddest movie\n'  # quotes that are tokens stay
        "3 how to take the perfect penalty\n"
    )
    data = read_text_file(_write(tmp_path / "ag", content), "ag")
    assert data.texts == (
        ("braves", "beat", '"astros"', "6", "-", "5", ".", "our", "view"),
        ('"', "who", "will", "love", "my", "children", '"', "saddest", "movie"),
        ("how", "to", "take", "the", "perfect", "penalty"),
    )
    assert data.labels.dtype == np.int64 and data.labels.tolist() == [1, 0, 3]
    assert data.classes == TEXT_DATASETS["ag"].classes and data.task == "classification"
    assert len(data) == 3 and not data.labels.flags.writeable


def test_nli_lines_join_premise_and_hypothesis_with_sep(tmp_path: Path) -> None:
    snli = ("entailment\tA Man rides .\tA person rides\n"
            "neutral\tTwo dogs [SEP] play\tDogs are happy .\n"
            "contradiction\tA cat sleeps .\tThe cat runs\n")
    data = read_text_file(_write(tmp_path / "snli", snli), "snli")
    assert data.labels.tolist() == [NLI_CLASSES.index(c) for c in
                                    ("entailment", "neutral", "contradiction")] == [0, 1, 2]
    assert data.texts[0] == ("a", "man", "rides", ".", SEP, "a", "person", "rides")
    # a literal [SEP] in a text is lower-cased and can not be taken for the separator
    assert data.texts[1].count(SEP) == 1 and "[sep]" in data.texts[1]
    mnli = "2\tThey claimed they had a bomb .\tThey did not say anything .\n"
    other = read_text_file(_write(tmp_path / "mnli", mnli), "mnli")
    assert other.labels.tolist() == [2] and other.classes[2] == "contradiction"
    assert other.texts[0][other.texts[0].index(SEP) + 1:] == tuple(
        "they did not say anything .".split())


@pytest.mark.parametrize(
    ("name", "content", "fragments"),
    [
        ("mr", "1 fine text\n0\n", ["line 2", "without text", "LABEL TEXT"]),
        ("mr", "1 fine text\n0 \n", ["line 2", "without text"]),
        ("mr", '1 ""\n', ["line 1", "without text"]),
        ("snli", "neutral\tA premise .\n", ["line 1", "no hypothesis", "PREMISE<TAB>HYPOTHESIS"]),
        ("snli", "neutral\tA premise .\t \n", ["line 1", "empty premise or hypothesis"]),
        ("mnli", "1\ta\tb\tc\n", ["line 1", "4 tab-separated fields"]),
        ("mr", "1 ok\n\nx bad label\n", ["line 3", "unknown label 'x'", "0..1"]),
        ("mr", "2 out of range\n", ["line 1", "unknown label '2'", "0 = negative"]),
        ("ag", "-1 negative\n", ["line 1", "unknown label '-1'", "0..3"]),
        ("snli", "maybe\tA b .\tC d .\n", ["line 1", "unknown label 'maybe'", "entailment"]),
        ("snli", "-\tA b .\tC d .\n", ["line 1", "unknown label '-'"]),
        ("mnli", "3\tA b .\tC d .\n", ["line 1", "unknown label '3'", "0..2"]),
        ("ag", "", ["holds no example", "LABEL TEXT"]),
        ("snli", "\n  \n\n", ["holds no example", "LABEL<TAB>PREMISE"]),
    ],
)
def test_malformed_files_name_file_line_and_expectation(
    tmp_path: Path, name: str, content: str, fragments: list[str]
) -> None:
    path = _write(tmp_path / name, content)
    with pytest.raises(AdvTransferError) as info:
        read_text_file(path, name)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message


def test_reading_rejects_unknown_names_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(AdvTransferError, match="unknown text dataset 'sst'.*ag, mr"):
        read_text_file(_write(tmp_path / "sst", "1 a\n"), "sst")
    with pytest.raises(AdvTransferError, match="does not exist"):
        read_text_file(tmp_path / "nothing", "mr")
    (tmp_path / "bad").write_bytes(b"1 \xff\xfe\n")
    with pytest.raises(AdvTransferError, match="UTF-8"):
        read_text_file(tmp_path / "bad", "mr")


def test_dataset_subset_and_validation() -> None:
    data = _dataset(["a b", "c", "d e f"], [0, 1, 1])
    part = data.subset([2, 0])
    assert part.texts == (("d", "e", "f"), ("a", "b")) and part.labels.tolist() == [1, 0]
    with pytest.raises(AdvTransferError, match="3 texts but 2 labels"):
        _dataset(["a", "b", "c"], [0, 1])
    with pytest.raises(AdvTransferError, match=r"labels .* must be in 0\.\.1"):
        _dataset(["a"], [2])
    with pytest.raises(AdvTransferError, match="must be integers"):
        _dataset(["a"], [0.5])  # type: ignore[list-item]


# --------------------------------------------------------------------------------------------
# Files on disk and downloads (the network is replaced)
# --------------------------------------------------------------------------------------------


@pytest.fixture()
def fake_network(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """Replace the download: record the URL and write ``state["payload"]`` to the destination
    (or raise ``state["error"]``)."""
    state: dict[str, object] = {"urls": []}

    def fake_download(url: str, dst: str, *args: object, **kwargs: object) -> None:
        state["urls"].append(url)  # type: ignore[attr-defined]
        if "error" in state:
            raise state["error"]  # type: ignore[misc]
        Path(dst).write_bytes(state["payload"])  # type: ignore[arg-type]

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    return state


def test_missing_file_names_path_url_and_download(tmp_path: Path,
                                                  fake_network: dict[str, object]) -> None:
    with pytest.raises(AdvTransferError) as info:
        load_text("mnli", tmp_path)
    message = str(info.value)
    assert str(tmp_path / "mnli") in message and "--download" in message
    assert f"{REPO}/raw/a2fb10f/adversarial-transfer-nlp/data/mnli" in message
    assert fake_network["urls"] == []


def test_download_with_the_right_hash_is_kept_and_read(
    tmp_path: Path, fake_network: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write_text_fixture(tmp_path / "src", "mr", n_per_class=5, seed=1)
    payload = source.read_bytes()
    fake_network["payload"] = payload
    monkeypatch.setitem(TEXT_DATASETS, "mr", dataclasses.replace(
        TEXT_DATASETS["mr"], sha256=hashlib.sha256(payload).hexdigest()))
    data = load_text("mr", tmp_path / "root", download=True)
    assert fake_network["urls"] == [f"{REPO}/raw/a2fb10f/adversarial-transfer-nlp/data/mr"]
    assert (tmp_path / "root" / "mr").read_bytes() == payload
    assert data.texts == read_text_file(source, "mr").texts
    # present now: no second download, and verify=True accepts it
    load_text("mr", tmp_path / "root", download=True, verify=True)
    assert len(fake_network["urls"]) == 1  # type: ignore[arg-type]


def test_download_with_a_wrong_hash_is_deleted(tmp_path: Path,
                                               fake_network: dict[str, object]) -> None:
    payload = write_text_fixture(tmp_path / "src", "snli", n_per_class=3).read_bytes()
    fake_network["payload"] = payload
    with pytest.raises(AdvTransferError) as info:
        load_text("snli", tmp_path, download=True)
    message = str(info.value)
    assert TEXT_DATASETS["snli"].sha256 in message
    assert hashlib.sha256(payload).hexdigest() in message
    assert not (tmp_path / "snli").exists()


def test_failed_download_leaves_nothing(tmp_path: Path,
                                        fake_network: dict[str, object]) -> None:
    fake_network["error"] = urllib.error.URLError("no route to host")
    with pytest.raises(AdvTransferError, match="downloading .*/data/yelp failed.*no route"):
        load_text("yelp", tmp_path, download=True)
    assert not (tmp_path / "yelp").exists()


def test_own_files_are_read_but_verify_checks_the_official_hash(
    tmp_path: Path, fake_network: dict[str, object]
) -> None:
    path = write_text_fixture(tmp_path, "ag", n_per_class=4, seed=2)
    data = load_text("ag", tmp_path)
    assert len(data) == 16 and np.bincount(data.labels).tolist() == [4, 4, 4, 4]
    with pytest.raises(AdvTransferError) as info:
        load_text("ag", tmp_path, verify=True)
    message = str(info.value)
    assert hashlib.sha256(path.read_bytes()).hexdigest() in message
    assert TEXT_DATASETS["ag"].sha256 in message and "verify=False" in message
    assert path.exists() and fake_network["urls"] == []
    with pytest.raises(AdvTransferError, match="unknown text dataset"):
        load_text("sst2", tmp_path)


# --------------------------------------------------------------------------------------------
# Fixture files
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(TEXT_DATASETS))
def test_fixture_files_are_balanced_deterministic_and_learnable(tmp_path: Path,
                                                                name: str) -> None:
    from sklearn.linear_model import LogisticRegression

    path = write_text_fixture(tmp_path / "a", name, n_per_class=40, seed=3)
    assert path == tmp_path / "a" / name
    again = write_text_fixture(tmp_path / "b", name, n_per_class=40, seed=3)
    other = write_text_fixture(tmp_path / "c", name, n_per_class=40, seed=4)
    assert path.read_bytes() == again.read_bytes() != other.read_bytes()
    data = read_text_file(path, name)
    k = len(TEXT_DATASETS[name].classes)
    assert np.bincount(data.labels, minlength=k).tolist() == [40] * k
    first = path.read_text().split("\n")[0].split("\t")[0]
    assert first in NLI_CLASSES if name == "snli" else first.split(" ")[0].isdigit()
    # a bag-of-words logistic regression learns the task on held-out examples
    train, _, test = stratified_split(data.labels, fractions=(0.6, 0.1, 0.3), seed=0)
    vocab = build_vocabulary(data.subset(train))
    counts = np.zeros((len(data), len(vocab)))
    for row, text in enumerate(data.texts):
        np.add.at(counts[row], vocab.ids(text), 1.0)
    model = LogisticRegression(max_iter=2000).fit(counts[train], data.labels[train])
    assert model.score(counts[test], data.labels[test]) >= 0.8


def test_fixture_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(AdvTransferError, match="n_per_class must be an integer >= 1"):
        write_text_fixture(tmp_path, "mr", n_per_class=0)
    with pytest.raises(AdvTransferTypeError):
        write_text_fixture(tmp_path, "mr", n_per_class=2.5)  # type: ignore[arg-type]
    with pytest.raises(AdvTransferError, match="unknown text dataset"):
        write_text_fixture(tmp_path, "trec")


# --------------------------------------------------------------------------------------------
# Vocabulary and encoding
# --------------------------------------------------------------------------------------------


def test_vocabulary_order_specials_and_limits() -> None:
    one = _dataset(["b a a", "y x"])
    two = _dataset(["c b a", f"z {SEP} z"], task="nli", classes=NLI_CLASSES)
    vocab = build_vocabulary([one, two])
    # counts: a 3, b 2, z 2, c 1, x 1, y 1; ties by token; [SEP] is no word
    assert vocab.tokens == ("[PAD]", "[UNK]", "[SEP]", "a", "b", "z", "c", "x", "y")
    assert vocab.counts == (0, 0, 0, 3, 2, 2, 1, 1, 1)
    expected = Counter(t for d in (one, two) for text in d.texts for t in text if t != SEP)
    assert dict(zip(vocab.tokens[3:], vocab.counts[3:], strict=True)) == expected
    assert vocab.ids(["a", "never-seen", SEP, "[PAD]"]) == [3, 1, 2, 0]
    assert "z" in vocab and "q" not in vocab and len(vocab) == 9
    assert build_vocabulary([one, two], min_count=2).tokens[3:] == ("a", "b", "z")
    assert build_vocabulary(one, max_size=5).tokens == ("[PAD]", "[UNK]", "[SEP]", "a", "b")
    with pytest.raises(AdvTransferError, match="max_size must be an integer >= 4"):
        build_vocabulary(one, max_size=3)
    with pytest.raises(AdvTransferError, match="min_count must be an integer >= 1"):
        build_vocabulary(one, min_count=0)
    with pytest.raises(AdvTransferTypeError, match="non-empty sequence of TextDataset"):
        build_vocabulary([])
    with pytest.raises(AdvTransferError, match="starts with"):
        Vocabulary(("a", "[PAD]", "[UNK]"), (1, 0, 0))


def test_encode_truncates_and_pads_classification() -> None:
    data = _dataset(["a b c d e", "b zzz", "a"])
    vocab = build_vocabulary(_dataset(["a b c d e"]))  # without zzz
    ids, lengths = encode(data, vocab, 3)
    assert ids.dtype == torch.long and ids.shape == (3, 3)
    assert ids.tolist() == [vocab.ids(["a", "b", "c"]), vocab.ids(["b"]) + [1, 0],
                            vocab.ids(["a"]) + [0, 0]]
    assert lengths.tolist() == [3, 2, 1]
    assert encode(data, vocab, 10)[1].tolist() == [5, 2, 1]


def _bert_truncate(premise: list[int], hypothesis: list[int], budget: int) -> tuple[int, int]:
    """BERT's ``_truncate_seq_pair``: drop the last token of the longer sequence (the
    hypothesis on a tie) until both fit."""
    p, h = list(premise), list(hypothesis)
    while len(p) + len(h) > budget:
        (p if len(p) > len(h) else h).pop()
    return len(p), len(h)


def test_nli_pairs_are_truncated_fairly() -> None:
    for n_p in range(1, 9):
        for n_h in range(1, 9):
            for max_len in range(3, 18):
                premise = [f"p{i}" for i in range(n_p)]
                hypothesis = [f"h{i}" for i in range(n_h)]
                data = TextDataset("pair", "nli", ((*premise, SEP, *hypothesis),),
                                   np.zeros(1), NLI_CLASSES)
                vocab = build_vocabulary(data)
                ids, lengths = encode(data, vocab, max_len)
                keep_p, keep_h = _bert_truncate(list(range(n_p)), list(range(n_h)), max_len - 1)
                want = vocab.ids([*premise[:keep_p], SEP, *hypothesis[:keep_h]])
                assert ids[0].tolist() == want + [0] * (max_len - len(want))
                assert lengths.item() == len(want) and keep_p >= 1 and keep_h >= 1
    with pytest.raises(AdvTransferError, match="max_len must be an integer >= 3"):
        encode(data, vocab, 2)


# --------------------------------------------------------------------------------------------
# Stratified splits
# --------------------------------------------------------------------------------------------


def test_stratified_split_proportions_cover_and_seeds() -> None:
    labels = np.repeat([0, 1, 2, 3], [37, 50, 13, 101])
    labels = np.random.default_rng(5).permutation(labels)
    fractions = (0.6, 0.15, 0.25)
    parts = stratified_split(labels, fractions=fractions, seed=0)
    for part, fraction in zip(parts, fractions, strict=True):
        assert part.dtype == np.int64 and np.all(np.diff(part) > 0)
        for cls in range(4):
            n_c = int(np.sum(labels == cls))
            assert abs(np.sum(labels[part] == cls) - fraction * n_c) <= 1
    everything = np.concatenate(parts)
    assert len(everything) == len(labels) and set(everything.tolist()) == set(range(len(labels)))
    again = stratified_split(labels, fractions=fractions, seed=0)
    other = stratified_split(labels, fractions=fractions, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    assert not np.array_equal(parts[0], other[0])


@pytest.mark.parametrize(
    ("fractions", "message"),
    [((0.5, 0.5), "three numbers"), ((0.0, 0.5, 0.5), r"in \(0, 1\)"),
     ((1.2, -0.1, -0.1), r"in \(0, 1\)"), ((0.6, 0.3, 0.3), "sum to 1"),
     ("abc", "three numbers")],
)
def test_stratified_split_checks_fractions(fractions: object, message: str) -> None:
    with pytest.raises(AdvTransferError, match=message):
        stratified_split([0, 1, 0, 1], fractions=fractions, seed=0)  # type: ignore[arg-type]


def test_stratified_split_checks_labels_and_seed() -> None:
    with pytest.raises(AdvTransferError, match="non-empty 1-D"):
        stratified_split([], seed=0)
    with pytest.raises(AdvTransferTypeError, match="seed"):
        stratified_split([0, 1], seed=None)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Embedding tables
# --------------------------------------------------------------------------------------------

CORPUS = [
    "the cat sat on the mat", "the dog sat on the mat", "a cat ran in the park",
    "a dog ran in the park", "my cat likes fish", "my dog likes fish",
    "bonds rose slowly friday traders", "traders said bonds rose slowly",
    "solo", "solo",  # a frequent word without any neighbour
    "rare words once",
]


def _zero_rows(table: torch.Tensor) -> list[bool]:
    return (table == 0).all(dim=1).tolist()


@pytest.mark.parametrize("method", ["random", "svd"])
def test_only_the_padding_row_is_zero(method: str) -> None:
    corpus = _dataset(CORPUS)
    vocab = build_vocabulary([corpus, _dataset(["unseen words only here"])])
    table = embedding_table(vocab, [corpus], dim=6, method=method, seed=0)
    assert table.dtype == torch.float32 and table.shape == (len(vocab), 6)
    assert _zero_rows(table) == [True] + [False] * (len(vocab) - 1)
    again = embedding_table(vocab, [corpus], dim=6, method=method, seed=0)
    assert torch.equal(table, again)
    assert not torch.equal(table, embedding_table(vocab, [corpus], dim=6, method=method, seed=1))


def test_random_rows_have_variance_one_over_dim() -> None:
    vocab = build_vocabulary(_dataset([" ".join(f"w{i}" for i in range(4000))]))
    table = embedding_table(vocab, _dataset(["w1"]), dim=50, method="random", seed=0)
    assert table[1:].var().item() == pytest.approx(1 / 50, rel=0.05)
    assert table[1:].mean().item() == pytest.approx(0.0, abs=0.002)


def _cosine(table: torch.Tensor, vocab: Vocabulary, a: str, b: str) -> float:
    u, v = table[vocab.index[a]], table[vocab.index[b]]
    return float(u @ v / (u.norm() * v.norm()))


def test_svd_puts_words_sharing_contexts_together() -> None:
    corpus = _dataset(CORPUS)
    vocab = build_vocabulary([corpus, _dataset(["unseen words only here"])])
    table = embedding_table(vocab, corpus, dim=4, method="svd", seed=0)
    assert _cosine(table, vocab, "cat", "dog") > _cosine(table, vocab, "cat", "bonds") + 0.5
    assert _cosine(table, vocab, "bonds", "traders") > _cosine(table, vocab, "dog", "traders")
    # fitted rows have unit norm; rare, isolated, unseen and special words keep the random rows
    random = embedding_table(vocab, corpus, dim=4, method="random", seed=0)
    for word in ("cat", "dog", "bonds", "the"):
        assert table[vocab.index[word]].norm().item() == pytest.approx(1.0, abs=1e-5)
    for word in ("[UNK]", "[SEP]", "solo", "rare", "unseen"):
        assert torch.equal(table[vocab.index[word]], random[vocab.index[word]])


def test_ppmi_matches_a_direct_count() -> None:
    corpus = _dataset(["a b c a b", "c c d", "a d"])
    vocab = build_vocabulary(corpus)
    window = 2
    ids = text_module._corpus_ids(vocab, [corpus], window)
    got = text_module._ppmi(ids, len(vocab), window).toarray()
    counts = np.zeros((len(vocab), len(vocab)))
    for text in corpus.texts:
        for i, w in enumerate(text):
            for j, c in enumerate(text):
                if 0 < abs(i - j) <= window:
                    counts[vocab.index[w], vocab.index[c]] += 1
    total, marginal = counts.sum(), counts.sum(axis=1)
    want = np.zeros_like(counts)
    for w in range(len(vocab)):
        for c in range(len(vocab)):
            if counts[w, c]:
                want[w, c] = max(0.0, math.log(counts[w, c] * total / (marginal[w] * marginal[c])))
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_embedding_arguments_are_checked() -> None:
    corpus = _dataset(CORPUS)
    vocab = build_vocabulary(corpus)
    with pytest.raises(AdvTransferError, match=r"method must be one of \['random', 'svd'\]"):
        embedding_table(vocab, corpus, dim=4, method="glove", seed=0)
    with pytest.raises(AdvTransferError, match="dim must be an integer >= 1"):
        embedding_table(vocab, corpus, dim=0, method="svd", seed=0)
    with pytest.raises(AdvTransferTypeError, match="Vocabulary"):
        embedding_table({}, corpus, dim=4, method="svd", seed=0)  # type: ignore[arg-type]
