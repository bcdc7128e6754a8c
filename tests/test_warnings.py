"""Warnings: Python warnings a library user can filter, one plain line each on the command line."""

from __future__ import annotations

import time
import warnings

import pytest
from typer.testing import CliRunner

import advtransfer
from advtransfer import AdvTransferWarning, progress
from advtransfer.cli import app


def test_warn_is_a_filterable_user_warning_attributed_to_the_caller(capsys):
    assert issubclass(AdvTransferWarning, UserWarning)
    with pytest.warns(AdvTransferWarning, match="^data recomputed$") as record:
        progress.warn("data recomputed")
    assert len(record) == 1 and record[0].filename == __file__  # stacklevel=2: not progress.py
    with warnings.catch_warnings():
        warnings.simplefilter("error", AdvTransferWarning)
        with pytest.raises(AdvTransferWarning, match="now an error"):
            progress.warn("now an error")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("ignore", AdvTransferWarning)
        progress.warn("silenced")
    assert seen == []
    assert capsys.readouterr().err == ""  # nothing printed behind the filters' back


def test_one_line_warnings_shows_every_category_as_one_line_and_restores(capsys, monkeypatch):
    before = warnings.showwarning
    monkeypatch.setattr(progress, "_last_line", 0.0)
    with progress.one_line_warnings():
        warnings.simplefilter("always")  # undone on exit with the display
        progress.warn("ours")
        warnings.warn("from the library,\n  on two lines", UserWarning, stacklevel=1)
        warnings.warn("numerics", RuntimeWarning, stacklevel=1)
        warnings.warn("old API", DeprecationWarning, stacklevel=1)
    assert progress._last_line > 0.0  # counted as a line for the heartbeat
    assert capsys.readouterr().err.splitlines() == [
        "warning: ours", "warning: from the library, on two lines", "warning: numerics",
        "warning: old API"]
    assert warnings.showwarning is before
    with pytest.warns(AdvTransferWarning):  # the usual display again
        progress.warn("after")
    assert capsys.readouterr().err == ""


def test_warnings_shown_by_the_cli_keep_the_heartbeat_quiet(capsys):
    """The heartbeat prints only after ``interval`` seconds without any line: a warning every
    0.05 s keeps it quiet, which it can only know when the display records the line."""
    with progress.one_line_warnings(), progress.heartbeat(lambda: "busy", interval=0.5):
        for i in range(24):  # 1.2 s in all, more than twice the interval
            progress.warn(f"step {i}")
            time.sleep(0.05)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "busy 0.0s" and lines[1:] == [f"warning: step {i}" for i in range(24)]


def test_cli_shows_library_and_own_warnings_as_single_lines(monkeypatch):
    real = advtransfer.transferability

    def noisy(*args, **kwargs):
        warnings.warn("a library note\nover two lines", UserWarning, stacklevel=2)
        return real(*args, **kwargs)

    monkeypatch.setattr(advtransfer, "transferability", noisy)
    before = warnings.showwarning
    result = CliRunner().invoke(app, [
        "measure", "--quiet", "--steps", "1", "--solver", "first_order", "--source",
        "digits-linear", "--target", "digits-linear", "--n-samples", "100000",
        "--threads", "1"])
    assert result.exit_code == 0, result.output
    shown = [ln for ln in result.stderr.splitlines() if ln.startswith("warning: ")]
    assert len(shown) == 2, result.stderr
    assert shown[0].startswith("warning: --n-samples 100000 is more than --data digits holds")
    assert shown[1] == "warning: a library note over two lines"
    for noise in ("UserWarning", "AdvTransferWarning", ".py:", "warnings.warn"):
        assert noise not in result.stderr
    assert warnings.showwarning is before  # restored when the command ends
