"""The Python code blocks of the README and docs are valid Python (they are read as examples)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def _blocks():
    for f in FILES:
        for i, code in enumerate(BLOCK.findall(f.read_text())):
            yield pytest.param(code, id=f"{f.name}#{i}")


@pytest.mark.parametrize("code", list(_blocks()))
def test_doc_code_block_compiles(code):
    compile(code, "<doc>", "exec")


def test_public_names_used_in_docs_exist():
    import ptg_refine

    text = "\n".join(f.read_text() for f in FILES)
    for name in set(re.findall(r"from ptg_refine import ([\w, ]+)", text)):
        for item in (n.strip() for n in name.split(",")):
            assert hasattr(ptg_refine, item), item
