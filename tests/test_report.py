"""advtransfer.report.write_report on small synthetic results."""

from __future__ import annotations

import copy
import csv
import io
import json
import math
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import matplotlib.image as mpimg
import numpy as np
import pytest

from advtransfer import report as report_module
from advtransfer.errors import AdvTransferError
from advtransfer.report import write_report

#: taken when the module is imported (collection), before any fixture replaces it
_REAL_PNG_BYTES = report_module._png_bytes
_REAL_DECLUTTER = report_module._declutter_labels


@pytest.fixture(scope="module", autouse=True)
def _rasterized_figures():
    """The figures of this module are opened and checked: lay them out and rasterize them
    (conftest.py skips both in the other tests of the fast tier)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(report_module, "_png_bytes", _REAL_PNG_BYTES)
        patch.setattr(report_module, "_declutter_labels", _REAL_DECLUTTER)
        yield


SHARES = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
ACC = [0.61, 0.64, 0.72, 0.77, 0.82, 0.94]
LOSS = [1.13, 1.11, 0.99, 0.87, 0.71, 0.65]
A1 = [0.31, 0.45, 0.52, 0.56, 0.70, 0.80]
A2 = [0.50, 0.42, 0.55, 0.47, 0.53, 0.44]  # unrelated to the outcomes


def make_results() -> dict[str, Any]:
    records = []
    for i, share in enumerate(SHARES):
        rec: dict[str, Any] = {
            "source": f"share-{round(share * 100)}%", "share": share,
            "alpha1_t2s": A1[i], "alpha2_t2s": A2[i],
            "combined_t2s": None if i == 2 else A1[i] * A2[i],
            "transfer_accuracy": ACC[i], "transfer_loss": LOSS[i], "arch": "tiny",
        }
        if i == 3:
            rec["extra"] = 0.123456  # a key first seen in a later record
        records.append(rec)
    return {
        "recipe": "digits-distribution", "config": {"epochs": 1},
        "versions": {"advtransfer": "0.1.0", "torch": "2.14.1", "python": "3.11.7"},
        "seed": 0, "device": "cpu", "wall_time_s": 123.4,
        "records": records,
        "report": {
            "title": "Digits <distribution> & shift",
            "description": "Sources see a **share** of the target classes.",
            "metrics": ["alpha1_t2s", "alpha2_t2s", "combined_t2s"],
            "outcomes": ["transfer_accuracy", "transfer_loss"],
            "sweep": "share",
            "labels": {"alpha1_t2s": "alpha1 (target -> source)",
                       "share": "share of target classes"},
        },
        "matrices": {"alpha1": {"names": ["target", "share-0%", "share-100%"],
                                "values": [[None, 0.42, 0.77], [0.35, None, 0.5],
                                           [0.71, 0.3, None]]}},
    }


class StrictHTML(HTMLParser):
    """Fails on mismatched or unclosed tags; collects <img src>."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs)["src"] or "")
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
        else:
            self.stack.pop()


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    out = tmp_path_factory.mktemp("run") / "nested" / "report"
    rows = write_report(make_results(), out, n_boot=500)
    return out, rows


def test_all_files_written(report: tuple[Path, list[dict[str, Any]]]) -> None:
    out, _ = report
    for name in ("results.csv", "report.md", "report.html", "correlations.json"):
        assert (out / name).is_file(), name
    pngs = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert pngs == ["matrix_alpha1.png", "scatter_transfer_accuracy.png",
                    "scatter_transfer_loss.png", "sweep_share.png"]
    leftovers = [p for p in out.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == []


def test_csv_round_trips(report: tuple[Path, list[dict[str, Any]]]) -> None:
    out, _ = report
    with open(out / "results.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6
    assert list(rows[0]) == ["source", "share", "alpha1_t2s", "alpha2_t2s", "combined_t2s",
                             "transfer_accuracy", "transfer_loss", "arch", "extra"]
    assert rows[2]["combined_t2s"] == ""  # None
    assert rows[0]["extra"] == "" and float(rows[3]["extra"]) == 0.123456
    assert [float(r["alpha1_t2s"]) for r in rows] == A1  # full precision


def test_correlations_returned_and_saved(report: tuple[Path, list[dict[str, Any]]]) -> None:
    out, rows = report
    assert json.loads((out / "correlations.json").read_text()) == rows
    pairs = [(r["metric"], r["outcome"]) for r in rows]
    assert pairs == [(m, o) for m in ("alpha1_t2s", "alpha2_t2s", "combined_t2s")
                     for o in ("transfer_accuracy", "transfer_loss")]
    combined = rows[4]
    assert (combined["n"], combined["dropped"]) == (5, 1)  # the None was skipped


def test_markdown_content(report: tuple[Path, list[dict[str, Any]]]) -> None:
    out, rows = report
    md = (out / "report.md").read_text(encoding="utf-8")
    assert md.startswith("# Digits <distribution> & shift\n")
    assert "Sources see a **share** of the target classes." in md
    for text in ("## Run", "digits-distribution", "torch 2.14.1", "123.4 s", "cpu"):
        assert text in md
    assert "| source | share | alpha1_t2s |" in md
    assert "| share-40% | 0.4 | 0.52 | 0.55 | — |" in md  # None shown as a dash
    assert "0.1235" in md  # 4 significant digits
    assert "Pearson r [95% CI]" in md
    for r in rows:
        assert f"| {r['metric']} | {r['outcome']} | {r['n']} |" in md
    assert "## Honest reading" in md
    for png in ("scatter_transfer_accuracy", "scatter_transfer_loss", "sweep_share",
                "matrix_alpha1"):
        assert f"](figures/{png}.png)" in md


def test_honest_reading(report: tuple[Path, list[dict[str, Any]]]) -> None:
    out, _ = report
    md = (out / "report.md").read_text(encoding="utf-8")
    lines = {line.split(":")[0][2:]: line for line in md.splitlines()
             if line.startswith("- ") and " vs " in line.split(":")[0]}
    # alpha1 rises with accuracy and falls with loss on all 6 points; alpha2 is unrelated.
    assert ": clear positive correlation." in lines["alpha1_t2s vs transfer_accuracy"]
    assert ": clear negative correlation." in lines["alpha1_t2s vs transfer_loss"]
    assert ": no clear correlation." in lines["alpha2_t2s vs transfer_accuracy"]
    assert "n = 5;" in lines["combined_t2s vs transfer_accuracy"]
    assert not any("significant" in line for line in lines.values())


def test_html_parses_escapes_and_links_every_png(
        report: tuple[Path, list[dict[str, Any]]]) -> None:
    out, _ = report
    text = (out / "report.html").read_text(encoding="utf-8")
    parser = StrictHTML()
    parser.feed(text)
    parser.close()
    assert parser.errors == [] and parser.stack == []
    assert "<title>Digits &lt;distribution&gt; &amp; shift</title>" in text
    assert "<distribution>" not in text
    pngs = {f"figures/{p.name}" for p in (out / "figures").glob("*.png")}
    assert set(parser.images) == pngs
    assert "<table>" in text and "Honest reading" in text


def test_pngs_open_with_sane_size(report: tuple[Path, list[dict[str, Any]]]) -> None:
    out, _ = report
    pngs = sorted((out / "figures").glob("*.png"))
    assert pngs, "the report wrote no figure"
    for png in pngs:
        img = mpimg.imread(png)
        h, w = img.shape[:2]
        assert 300 <= h <= 4000 and 300 <= w <= 4000, (png.name, img.shape)
        assert img[..., :3].std() > 0.05, png.name  # not blank


def test_small_n_is_not_called_significant(tmp_path: Path) -> None:
    """Perfectly monotone data at n = 4: Pearson p is 0 but the exact Spearman p is 1/12."""
    results = {"records": [{"source": str(i), "m": float(i), "acc": float(i)} for i in range(4)],
               "report": {"title": "t", "metrics": ["m"], "outcomes": ["acc"]}}
    rows = write_report(results, tmp_path, n_boot=50)
    assert rows[0]["spearman_p_exact"] == pytest.approx(1 / 12)
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    # both intervals collapse to [1, 1]: Pearson is clear, Spearman's interval excludes 0 while
    # its exact p does not reach 5%
    assert ("m vs acc: inconclusive (Pearson clear; Spearman: the 95% interval [1.00, 1.00] "
            "excludes 0 but p = 0.083)") in md
    assert "0.083 (exact)" in md
    assert sorted(p.name for p in (tmp_path / "figures").glob("*.png")) == ["scatter_acc.png"]


def test_missing_values_and_minimal_results(tmp_path: Path) -> None:
    results = {"records": [{"source": "a", "m": None, "acc": 0.5},
                           {"source": "b", "m": None, "acc": None},
                           {"source": "c", "acc": 0.7}],
               "report": {"title": "minimal", "metrics": ["m"], "outcomes": ["acc"],
                          "sweep": "m", "columns": ["source", "m"]}}
    rows = write_report(results, tmp_path, n_boot=50)
    assert rows[0]["n"] == 0 and rows[0]["pearson_r"] is None
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "m vs acc: no reading, correlation undefined (n = 0)" in md
    assert "| source | m |\n" in md and "| a | — |" in md  # columns honoured
    assert "## Run" not in md  # nothing to report
    assert "No sweep figure" in md
    assert (tmp_path / "figures" / "scatter_acc.png").is_file()


def test_rewrite_is_idempotent(tmp_path: Path) -> None:
    results = {"records": [{"source": str(i), "m": i * 1.0, "acc": (i % 3) * 1.0}
                           for i in range(5)],
               "report": {"title": "t", "metrics": ["m"], "outcomes": ["acc"]}}
    first = write_report(results, tmp_path, n_boot=100)
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert write_report(results, tmp_path, n_boot=100) == first
    assert (tmp_path / "report.md").read_text(encoding="utf-8") == md


@pytest.mark.parametrize("mutate,match", [
    (lambda r: r["report"].pop("title"), "title"),
    (lambda r: r["report"].__setitem__("metrics", ["nope"]), "no record has"),
    (lambda r: r["report"].__setitem__("sweep", "nope"), "sweep"),
    (lambda r: r["matrices"]["alpha1"]["values"].pop(), "3 x 3"),
    (lambda r: r["matrices"]["alpha1"].__setitem__("rows", "targets"), "'rows' and 'columns'"),
    (lambda r: r.__setitem__("records", {"a": 1}), "records"),
])
def test_malformed_results_raise_before_writing(tmp_path: Path, mutate: Any, match: str) -> None:
    results = copy.deepcopy(make_results())
    mutate(results)
    out = tmp_path / "out"
    with pytest.raises(AdvTransferError, match=match):
        write_report(results, out)
    assert not out.exists()


def test_a_matrix_that_names_its_axes_is_drawn_and_captioned_with_them(tmp_path: Path) -> None:
    """Without axis names a matrix's rows are attackers and its columns victims; with
    ``rows``/``columns`` (a transfer-accuracy matrix, say) those names are used instead."""
    results = copy.deepcopy(make_results())
    write_report(results, tmp_path / "plain", n_boot=10)
    results["matrices"]["alpha1"].update(rows="target task", columns="source model")
    write_report(results, tmp_path / "named", n_boot=10)
    plain = (tmp_path / "plain" / "report.md").read_text(encoding="utf-8")
    named = (tmp_path / "named" / "report.md").read_text(encoding="utf-8")
    assert "rows are attackers (adversarial examples crafted on)" in plain
    assert "rows are target task, columns are source model" in named
    assert "attackers" not in named.split("rows are target task")[1].split("\n")[0]


def test_awkward_strings_are_escaped(tmp_path: Path) -> None:
    results = {"records": [{"source": 'a,"b"\nc', "m": 1.0, "acc": 2.0, "hist": [1, 2]},
                           {"source": "<i>x|y</i>", "m": 2.0, "acc": 1.0}],
               "report": {"title": "t", "metrics": ["m"], "outcomes": ["acc"],
                          "labels": {"acc": "<b>accuracy</b>"}}}
    write_report(results, tmp_path, n_boot=10)
    rows = list(csv.DictReader(io.StringIO((tmp_path / "results.csv").read_text())))
    assert rows[0]["source"] == 'a,"b"\nc' and json.loads(rows[0]["hist"]) == [1, 2]
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<i>" not in page and "<b>" not in page and "&lt;i&gt;x|y&lt;/i&gt;" in page
    parser = StrictHTML()
    parser.feed(page)
    assert parser.errors == [] and parser.stack == []
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "| <i>x\\|y</i> |" in md  # a pipe inside a cell must not split the row


class _Tree(HTMLParser):
    """The page as nested ``[tag, attrs, children]`` lists (text as str children)."""

    VOID = StrictHTML.VOID

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root: list[Any] = ["root", {}, []]
        self.open: list[list[Any]] = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = [tag, dict(attrs), []]
        self.open[-1][2].append(node)
        if tag not in self.VOID:
            self.open.append(node)

    def handle_endtag(self, tag: str) -> None:
        if tag not in self.VOID and self.open[-1][0] == tag:
            self.open.pop()

    def handle_data(self, data: str) -> None:
        self.open[-1][2].append(data)


def _parse_page(page: str) -> list[Any]:
    tree = _Tree()
    tree.feed(page)
    tree.close()
    return tree.root


def _all(node: list[Any], tag: str) -> list[list[Any]]:
    """Every element ``tag`` under ``node``, in document order."""
    found = []
    for child in node[2]:
        if isinstance(child, list):
            found += ([child] if child[0] == tag else []) + _all(child, tag)
    return found


def _text(node: list[Any]) -> str:
    return "".join(c if isinstance(c, str) else _text(c) for c in node[2])


def _cells(table: list[Any]) -> list[list[list[Any]]]:
    return [[c for c in tr[2] if isinstance(c, list) and c[0] in ("th", "td")]
            for tr in _all(table, "tr")]


def _description_results(description: str, source: str = "s") -> dict[str, Any]:
    return {"records": [{"source": source, "m": 1.0, "acc": 2.0},
                        {"source": "t", "m": 2.0, "acc": 1.0}],
            "report": {"title": "t", "description": description, "metrics": ["m"],
                       "outcomes": ["acc"]}}


def test_description_markdown_renders_tables_code_links_and_images(tmp_path: Path) -> None:
    """The description's Markdown, as a browser sees it: a pipe escaped inside code stays in
    its cell, and bold, links, images and raw ``<``/``&`` come out as elements and text."""
    rows = [["`a\\|b`", "**0.74**", "[paper](https://arxiv.org/abs/2006.14512)"],
            ["a<b & *c*", "1", "![scatter plot](figures/x.png)"]]
    table = "| method | tau | see |\n|---|---:|---|\n" + "\n".join(
        "| " + " | ".join(r) + " |" for r in rows)
    write_report(_description_results(f"Intro with `code`.\n\n{table}\n\nAfter."), tmp_path,
                 n_boot=10)
    page = _parse_page((tmp_path / "report.html").read_text(encoding="utf-8"))
    first = _all(page, "table")[0]  # the description comes before the records
    cells = _cells(first)
    assert [[_text(c) for c in row] for row in cells] == [
        ["method", "tau", "see"], ["a|b", "0.74", "paper"], ["a<b & c", "1", ""]]
    assert [_text(c) for c in _all(cells[1][0], "code")] == ["a|b"]
    assert [_text(c) for c in _all(cells[1][1], "strong")] == ["0.74"]
    assert [a[1]["href"] for a in _all(cells[1][2], "a")] == [rows[0][2].split("(")[1][:-1]]
    assert [_text(c) for c in _all(cells[2][0], "em")] == ["c"]
    assert [(i[1]["src"], i[1]["alt"]) for i in _all(cells[2][2], "img")] == [
        ("figures/x.png", "scatter plot")]
    assert "right" in (cells[1][1][1].get("style") or "")  # ---: aligns the column right
    paragraphs = [_text(p) for p in _all(page, "p")]
    assert paragraphs[:1] == ["Intro with code."] and "After." in paragraphs
    strict = StrictHTML()
    strict.feed((tmp_path / "report.html").read_text(encoding="utf-8"))
    assert strict.errors == [] and strict.stack == []


def test_results_text_is_shown_as_written_not_as_markup(tmp_path: Path) -> None:
    """A model name or label with ``<``, ``&`` and ``*`` is plain text everywhere it appears
    (records table, correlation table, honest reading, title): no element comes from it."""
    name = "res<net>&*fine*_**v2**"
    results = _description_results("", source=name)
    results["report"]["title"] = f"transfer of {name}"
    results["report"]["labels"] = {"acc": "acc <i>&*top*"}
    write_report(results, tmp_path, n_boot=10)
    page = _parse_page((tmp_path / "report.html").read_text(encoding="utf-8"))
    for tag in ("net", "i", "em", "strong", "script"):
        assert _all(page, tag) == [], tag
    records = next(t for t in _all(page, "table") if _text(_cells(t)[0][0]) == "source")
    assert [_text(row[0]) for row in _cells(records)[1:]] == [name, "t"]
    assert _text(_all(page, "title")[0]) == _text(_all(page, "h1")[0]) == results[
        "report"]["title"]
    assert any("acc <i>&*top*" in _text(fig) for fig in _all(page, "figcaption"))


def _row(r: float, p: float, lo: float, hi: float, rho: float | None = None,
         sp: float | None = None, slo: float | None = None, shi: float | None = None) -> dict:
    """A correlation row whose Spearman part repeats the Pearson part unless given."""
    return {"metric": "m", "outcome": "acc", "n": 12, "confidence": 0.95, "pearson_r": r,
            "pearson_p": p, "pearson_ci_low": lo, "pearson_ci_high": hi,
            "spearman_rho": r if rho is None else rho, "spearman_p": p if sp is None else sp,
            "spearman_ci_low": lo if slo is None else slo,
            "spearman_ci_high": hi if shi is None else shi, "spearman_p_exact": None}


def test_honest_reading_needs_p_and_interval_to_agree() -> None:
    """One rule: clear only when p < 0.05 and the interval excludes 0; disagreement is said."""
    from advtransfer.report.text import _honest_line

    line = _honest_line(_row(0.45, 0.03, -0.05, 0.6))
    assert line.startswith("m vs acc: inconclusive (Pearson: p = 0.03 but the 95% interval "
                           "[-0.05, 0.60] includes 0; Spearman: p = 0.03 but")
    assert "significant" not in line and "clear positive" not in line
    line = _honest_line(_row(0.5, 0.08, 0.02, 0.7))
    assert "inconclusive (Pearson: the 95% interval [0.02, 0.70] excludes 0 but p = 0.08" in line
    # only Spearman disagrees (as alpha1 vs transfer loss in the demo)
    line = _honest_line(_row(-0.49, 0.03, -0.70, -0.13, -0.48, 0.034, -0.79, 0.08))
    assert ("inconclusive (Pearson clear; Spearman: p = 0.034 but the 95% interval "
            "[-0.79, 0.08] includes 0)") in line
    assert _honest_line(_row(0.8, 0.001, 0.4, 0.95)).startswith(
        "m vs acc: clear positive correlation. n = 12; Pearson r = 0.80, p = 0.001, 95% CI "
        "[0.40, 0.95]; Spearman")
    assert _honest_line(_row(-0.7, 0.01, -0.9, -0.2)).startswith(
        "m vs acc: clear negative correlation.")
    assert _honest_line(_row(0.1, 0.6, -0.4, 0.5)).startswith("m vs acc: no clear correlation.")
    line = _honest_line(_row(0.05, 0.01, -0.5, -0.1))
    assert "lies on the other side of 0 from the estimate" in line
    line = _honest_line(_row(0.8, 0.001, math.nan, math.nan))
    assert "inconclusive (Pearson: p = 0.001 but there is no bootstrap interval" in line


def test_outlier_carried_correlation_is_inconclusive(tmp_path: Path) -> None:
    """One high-leverage point: Pearson p < 0.05, but its bootstrap interval includes 0."""
    xs = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 3.0]
    ys = [0.5, 0.2, 0.6, 0.1, 0.4, 0.3, 0.7, 0.2, 0.5, 1.5]
    results = {"records": [{"m": x, "acc": y} for x, y in zip(xs, ys, strict=True)],
               "report": {"title": "t", "metrics": ["m"], "outcomes": ["acc"]}}
    row = write_report(results, tmp_path, n_boot=2000)[0]
    assert row["pearson_p"] < 0.05 and row["pearson_ci_low"] < 0 < row["pearson_ci_high"]
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    line = next(ln for ln in md.splitlines() if ln.startswith("- m vs acc:"))
    assert line.startswith("- m vs acc: inconclusive (Pearson: p = ")
    assert f"[{row['pearson_ci_low']:.2f}, {row['pearson_ci_high']:.2f}] includes 0" in line
    assert "significant" not in line


def _grouped_results(within_slope: float) -> dict[str, Any]:
    """Five shares x 4 seeds: the share drives both alpha and accuracy; inside each share the
    deviations of accuracy are ``within_slope`` times those of alpha plus a pattern orthogonal
    to them (so r_w is 0 for slope 0 and clearly positive for slope 1)."""
    alpha_dev = [0.02, -0.02, 0.01, -0.01]
    other_dev = [0.01, 0.01, -0.01, -0.01]  # orthogonal to alpha_dev, sums to 0
    records = []
    for k, share in enumerate([0.0, 0.25, 0.5, 0.75, 1.0]):
        for j in range(4):
            a = 0.3 + 0.4 * share + alpha_dev[(j + k) % 4] * (1 + 0.1 * k)
            acc = 0.8 + 0.15 * share + within_slope * (a - 0.3 - 0.4 * share) + other_dev[
                (j + k) % 4] * (1 + 0.2 * k)
            records.append({"source": f"{round(share * 100)}%#{j}", "share": share,
                            "alpha1": a, "acc": acc})
    return {"records": records,
            "report": {"title": "grouped", "metrics": ["alpha1"], "outcomes": ["acc"],
                       "sweep": "share", "groups": "share",
                       "labels": {"share": "share of target classes", "acc": "accuracy"}}}


def test_within_group_section_and_what_the_run_shows(tmp_path: Path) -> None:
    from advtransfer.stats import correlation, within_group_correlation

    results = _grouped_results(within_slope=0.0)
    rows = write_report(results, tmp_path, n_boot=500)
    recs = results["records"]
    ref = within_group_correlation([r["alpha1"] for r in recs], [r["acc"] for r in recs],
                                   [r["share"] for r in recs], n_boot=500, seed=0,
                                   names=("alpha1", "acc"))
    assert ref.r == pytest.approx(0.0, abs=1e-9)  # by construction
    assert rows[0]["within"] == {"group": "share", **ref.to_dict()}
    assert json.loads((tmp_path / "correlations.json").read_text())[0]["within"]["r"] == \
        pytest.approx(ref.r, abs=1e-12)
    groups = json.loads((tmp_path / "groups.json").read_text())
    first = [r["alpha1"] for r in recs if r["share"] == 0.0]
    assert groups["summary"][0]["group"] == 0.0 and groups["summary"][0]["n"] == 4
    assert groups["summary"][0]["stats"]["alpha1"]["mean"] == pytest.approx(
        sum(first) / 4, rel=1e-12)
    share_alpha = correlation([r["share"] for r in recs], [r["alpha1"] for r in recs],
                              n_boot=500, seed=0)
    design = {r["outcome"]: r for r in groups["design"]}
    assert design["alpha1"]["pearson_r"] == pytest.approx(share_alpha.pearson_r, rel=1e-12)

    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "## Within groups of equal share of target classes" in md
    mean, sd = sum(first) / 4, float(np.std(first, ddof=1))
    assert f"| 0 | 4 | {sum(r['acc'] for r in recs[:4]) / 4:.4g} ± " in md
    assert f" | {mean:.4g} ± {sd:.2g} |" in md
    assert "| alpha1 | acc | 20 | 5 | 0.000 [" in md
    assert ("- alpha1 vs acc within equal share of target classes: no clear correlation. "
            "n = 20 in 5 groups; r_w = 0.00, p = 1 (permutation)") in md
    assert "- alpha1 vs acc: clear positive correlation." in md  # pooled: carried by the share
    shows = md.split("## What this run shows and does not show")[1].split("## Figures")[0]
    in_short = shows.split("\n\n")[1]
    assert in_short.startswith("In short, for accuracy:")
    # the report opens on that conclusion: the first section after the title
    sections = [ln for ln in md.splitlines() if ln.startswith("## ")]
    assert sections[0] == "## In short" and md.split("## In short")[1].strip().startswith(in_short)
    shown, not_shown = shows.split("Does not show:")
    assert "The metrics follow the designed share of target classes" in shown
    assert "Pooled over all 20 sources, clear correlation with accuracy for alpha1" in shown
    assert ("That alpha1 predict accuracy beyond what the share of target classes explains: "
            "within groups of equal share of target classes, no clear correlation for alpha1 "
            "(r_w = 0.00 [") in not_shown
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    parser = StrictHTML()
    parser.feed(page)
    assert parser.errors == [] and parser.stack == [] and "What this run shows" in page
    from advtransfer.report.figures import _corr_title

    assert "\nwithin equal share: r_w = 0.00 (p = 1), CI [" in _corr_title(rows[0])
    assert ("In short, for accuracy: the share of target classes moves both the metrics and "
            "accuracy, so they correlate when pooled over all sources; at a fixed share of "
            "target classes, no metric clearly tracks accuracy, so this run gives no evidence "
            "that the metrics predict accuracy beyond the share of target classes.") in md

    rows = write_report(_grouped_results(within_slope=1.0), tmp_path / "b", n_boot=500)
    assert rows[0]["within"]["r"] > 0.5
    md = (tmp_path / "b" / "report.md").read_text(encoding="utf-8")
    shown = md.split("Does not show:")[0].split("## What this run shows")[1]
    assert ("Within groups of equal share of target classes, clear correlation with accuracy "
            "for alpha1 (r_w = ") in shown
    assert "this metric carries information on accuracy beyond" in shown
    assert "at a fixed share of target classes, alpha1 still tracks accuracy." in md


def test_within_line_says_when_the_t_test_disagrees() -> None:
    from advtransfer.report.text import _within_line

    w = {"metric": "m", "outcome": "acc", "n": 20, "groups": 5, "r": 0.34, "p": 0.021,
         "p_t": 0.2, "ci_low": 0.09, "ci_high": 0.63, "confidence": 0.95}
    line = _within_line(w, "share")
    assert line.startswith("m vs acc within equal share: clear positive correlation. n = 20 in "
                           "5 groups; r_w = 0.34, p = 0.021 (permutation), 95% CI [0.09, 0.63]")
    assert line.endswith("gives p = 0.2.")
    assert "t test" not in _within_line({**w, "p_t": 0.03}, "share")


def test_cli_summary_prints_within_beside_pooled(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from advtransfer.cli import app

    (tmp_path / "results.json").write_text(json.dumps(_grouped_results(within_slope=1.0)))
    out = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert out.exit_code == 0, out.output
    row = json.loads((tmp_path / "results.json").read_text())["correlations"][0]
    assert "r_w" in out.output and "p_w" in out.output
    cells = next(ln for ln in out.output.splitlines() if ln.strip().startswith("alpha1")).split()
    assert f"{row['pearson_r']:.2f}" in cells and f"{row['within']['r']:.2f}" in cells
    assert row["pearson_r"] != pytest.approx(row["within"]["r"], abs=0.01)


def make_selection_results() -> dict[str, Any]:
    """Two target tasks x three candidates, with the model-selection tau table."""
    records = [{"source": s, "target": t, "alpha1": a, "transfer_accuracy": acc}
               for t, rows in (("0-4", [("mlp", 0.3, 0.7), ("cnn", 0.6, 0.9),
                                        ("lin", 0.1, 0.5)]),
                               ("parity", [("mlp", 0.4, 0.6), ("cnn", 0.2, 0.8),
                                           ("lin", 0.5, 0.55)]))
               for s, a, acc in rows]
    tau = {"alpha1": {"0-4": 1.0, "parity": -0.5, "mean": 0.25},
           "logme": {"0-4": 0.5, "parity": 0.75, "mean": 0.625}}
    return {"records": records, "selection": {"weighted_tau": tau},
            "report": {"title": "selection", "metrics": ["alpha1"],
                       "outcomes": ["transfer_accuracy"], "sweep": None,
                       "labels": {"logme": "LogME"}}}


def _check_readable(fig: Any) -> None:
    """Axis labels (with units where the key has one), a title, a legend or colour bar."""
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]
    assert axes
    for ax in axes:  # a shared x axis is labelled once, under its column
        xlabel = any(a.get_xlabel() for a in ax.get_shared_x_axes().get_siblings(ax))
        assert xlabel and ax.get_ylabel(), (ax.get_xlabel(), ax.get_ylabel())
    assert fig.get_suptitle() or all(ax.get_title() for ax in axes)
    has_legend = bool(fig.legends) or any(ax.get_legend() for ax in axes)
    has_colourbar = any(ax.get_label() == "<colorbar>" for ax in fig.axes)
    assert has_legend or has_colourbar


def test_every_figure_has_labels_units_title_and_legend() -> None:
    from advtransfer.report.figures import (
        _matrix_figure,
        _scatter_figure,
        _sweep_figure,
        _tau_figure,
    )
    from advtransfer.report.spec import _parse
    from advtransfer.stats import correlation_table

    for results in (make_results(), make_selection_results()):
        spec = _parse(results)
        rows = correlation_table(spec.records, spec.metrics, spec.outcomes, n_boot=50)
        corr = {(r["metric"], r["outcome"]): r for r in rows}
        figures = [_scatter_figure(spec, o, corr) for o in spec.outcomes]
        figures.append(_sweep_figure(spec))
        figures += [_matrix_figure(spec, n, *m) for n, m in spec.matrices.items()]
        if "selection" in results:
            figures.append(_tau_figure(spec, results["selection"]["weighted_tau"]))
        for fig in [f for f in figures if f is not None]:
            _check_readable(fig)
    spec = _parse(make_results())
    fig = _scatter_figure(spec, "transfer_accuracy", corr={
        (m, o): {"n": 6} for m in spec.metrics for o in spec.outcomes})
    assert "fraction correct" in fig.axes[0].get_ylabel()  # accuracy has a unit
    assert "unitless" in fig.axes[0].get_xlabel()  # alpha1 is a ratio


def test_model_selection_figures_colour_targets_and_chart_the_tau_table(tmp_path: Path) -> None:
    from advtransfer.report.figures import _scatter_figure, _tau_figure
    from advtransfer.report.spec import _parse

    results = make_selection_results()
    spec = _parse(results)
    fig = _scatter_figure(spec, "transfer_accuracy",
                          {("alpha1", "transfer_accuracy"): {"n": 6}})
    ax = fig.axes[0]
    groups = {lab: c.get_offsets().tolist() for c, lab in
              zip(ax.collections, [t.get_text() for t in fig.legends[0].get_texts()],
                  strict=True)}
    assert groups == {"target 0-4": [[0.3, 0.7], [0.6, 0.9], [0.1, 0.5]],
                      "target parity": [[0.4, 0.6], [0.2, 0.8], [0.5, 0.55]]}
    colours = {tuple(c.get_facecolor()[0]) for c in ax.collections}
    assert len(colours) == 2
    tau = results["selection"]["weighted_tau"]
    fig = _tau_figure(spec, tau)
    ax = fig.axes[0]
    # rows best mean on top (highest y): LogME (0.625) above alpha1 (0.25)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["alpha1", "LogME"]
    widths = sorted(round(p.get_width(), 9) for p in ax.patches)
    assert widths == sorted([1.0, -0.5, 0.5, 0.75])  # one bar per method x target
    means = ax.lines[0].get_xdata().tolist()
    assert means == [0.25, 0.625]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert sorted(legend) == ["mean over targets", "target 0-4", "target parity"]
    write_report(results, tmp_path, n_boot=50)
    assert (tmp_path / "figures" / "selection_weighted_tau.png").is_file()
    assert "figures/selection_weighted_tau.png" in (tmp_path / "report.html").read_text()


def _chromium() -> str | None:
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run_chromium(tmp_path: Path, *args: str) -> str:
    import subprocess

    profile = tmp_path / "chromium-profile"
    cmd = [_chromium() or "chromium", "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-quic", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
           "--hide-scrollbars", "--virtual-time-budget=10000", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.skipif(_chromium() is None, reason="chromium is not installed (the CI installs it: "
                                                "apt-get install chromium)")
def test_report_html_renders_in_headless_chromium(tmp_path: Path) -> None:
    import numpy as np

    out = tmp_path / "run"
    results = make_results()
    results["selection"] = make_selection_results()["selection"]
    write_report(results, out, n_boot=50)
    page = (out / "report.html").read_text()
    parser = StrictHTML()
    parser.feed(page)
    assert len(parser.images) == 5
    for src in parser.images:  # every image file exists and decodes
        assert mpimg.imread(out / src).size > 0
    # the browser's own view: every <img> loaded with a real size once the page is loaded
    probe = out / "probe.html"
    probe.write_text(page.replace("</body>", (
        "<script>window.addEventListener('load', () => { const imgs = [...document.images]; "
        "document.body.dataset.images = imgs.length; document.body.dataset.broken = "
        "imgs.filter(i => !i.complete || i.naturalWidth === 0).length; });</script></body>")))
    shot = tmp_path / "shot.png"  # one browser start: the DOM and a screenshot of the page
    dom = _run_chromium(tmp_path, "--window-size=1200,4000", f"--screenshot={shot}",
                        "--dump-dom", probe.as_uri())
    assert 'data-images="5"' in dom and 'data-broken="0"' in dom, dom[-500:]
    for table in ("Records", "Correlations", "Honest reading", "Figures"):
        assert f"<h2>{table}</h2>" in dom
    pixels = mpimg.imread(shot)[..., :3]
    assert pixels.shape[:2] == (4000, 1200)
    dark = (pixels.mean(axis=2) < 0.5).mean()  # text, table rules and figures
    assert 0.005 < dark < 0.5 and float(np.std(pixels)) > 0.05


def test_axis_unit_follows_the_recipes_label_before_the_key() -> None:
    # the authors' synthetic columns: loss_f_S is an RMSE, gradient_loss a distance
    from advtransfer.report.figures import _axis_label
    from advtransfer.report.spec import _parse

    spec = _parse({"records": [{"loss_f_S": 0.1, "gradient_loss": 0.2, "transfer_loss": 1.0}],
                   "report": {"title": "t", "metrics": ["gradient_loss"],
                              "outcomes": ["loss_f_S"],
                              "labels": {"loss_f_S": "transfer RMSE (f_S refitted)",
                                         "gradient_loss": "gradient-matching distance"}}})
    assert _axis_label(spec, "loss_f_S").endswith("(target units)")
    assert _axis_label(spec, "gradient_loss").endswith("(unitless)")
    assert _axis_label(spec, "transfer_loss").endswith("(cross-entropy, nats)")


def test_sweep_figure_draws_one_line_per_design_group() -> None:
    # several runs swept over the same scale (the authors' synthetic sweep): one line per run,
    # not one mean over runs that the design keeps apart
    from advtransfer.report.figures import _sweep_figure
    from advtransfer.report.spec import _parse

    records = [{"run": run, "scale": s, "alpha1": a * (1 - s), "loss": s + a}
               for run, a in (("a", 1.0), ("b", 0.5), ("c", 0.2)) for s in (0.0, 0.5, 1.0)]
    spec = _parse({"records": records,
                   "report": {"title": "t", "metrics": ["alpha1"], "outcomes": ["loss"],
                              "sweep": "scale", "groups": "run"}})
    fig = _sweep_figure(spec)
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.lines] == ["a", "b", "c"]
    assert ax.lines[1].get_ydata().tolist() == [0.5, 1.0, 1.5]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["a", "b", "c"]
    _check_readable(fig)


def test_label_boxes_are_computed_where_matplotlib_puts_the_text() -> None:
    # the decluttering places labels by arithmetic on each label's size; that must be the box
    # matplotlib draws at every candidate position (multi-line text and every alignment)
    from advtransfer.report import figures as rep

    fig = rep._new_figure(4, 3)
    ax = fig.subplots()
    ax.scatter([0.2, 0.8], [0.3, 0.7])
    ann = ax.annotate("cnn32/digits10\nseed 3", (0.2, 0.3), xytext=(0, 7),
                      textcoords="offset points", fontsize=7.5)
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    extent = rep._text_extent(ann, renderer)
    centre = ax.transData.transform((0.2, 0.3))
    for cand in [rep._UP, rep._DOWN, *rep._NEAR, *rep._FAR]:
        dx, dy, ha, va = cand
        ann.xyann = (dx, dy)
        ann.set_horizontalalignment(ha)
        ann.set_verticalalignment(va)
        drawn = rep._text_extent(ann, renderer)
        box = rep._candidate_box(centre, (extent.width, extent.height), cand, fig.dpi / 72.0)
        assert np.allclose(box.extents, drawn.extents, atol=0.51), (cand, box, drawn)
