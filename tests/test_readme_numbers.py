"""The second tier's check of the README's numbers: every ``<!-- numbers:NAME -->`` table is
what the recipe behind it computes with this code, over the table's seeds, within the tolerance
that the spread over seeds gives (``tools/readme_numbers.py``). One test per table, so that the
tables run in parallel under pytest-xdist and a stale one is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_readme import README, _tool

NAMES = sorted(m.group("name") for m in _tool().BLOCK.finditer(README.read_text()))


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_readme_table_is_what_the_recipe_computes(name: str, tmp_path: Path) -> None:
    assert _tool().main(["--check", "--only", name, "--runs", str(tmp_path)]) == 0
