"""The README's settings reference is the one the code generates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fastsmtp.cli import settings_table

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_settings_table_matches_the_dataclass() -> None:
    if not README.exists():  # the suite run from an installed wheel, without the tree
        pytest.skip("README.md is not next to the tests")
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- settings:start -->\n(.*?)\n<!-- settings:end -->", text, re.S)
    assert match, "README.md lost its settings markers"
    assert match.group(1) == settings_table(), "run `make docs` to regenerate the table"
