"""The README's example outputs come from scripts/readme_examples.py: its markers must be well formed
and name requests the script knows, and a rewrite replaces exactly the marked blocks (issue 14 item 2)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("readme_examples", ROOT / "scripts" / "readme_examples.py")
assert spec is not None and spec.loader is not None
readme_examples = importlib.util.module_from_spec(spec)
spec.loader.exec_module(readme_examples)


def test_the_readme_marks_its_example_outputs_for_the_script():
    text = (ROOT / "README.md").read_text()
    assert readme_examples.check_structure(text) == []
    assert set(readme_examples.marked_names(text)) == set(readme_examples.EXAMPLES)
    assert "PENDING" not in text, "run scripts/readme_examples.py"


def test_rewrite_replaces_only_the_marked_blocks():
    text = "intro\n<!-- readme-example: score -->\n```json\nold\n```\n<!-- /readme-example -->\nrest\n"
    assert readme_examples.rewrite(text, {"score": '{"score": 1.5}\n'}) == text.replace("old", '{"score": 1.5}')


def test_broken_or_unknown_markers_are_reported():
    unclosed = "<!-- readme-example: score -->\n```json\n{}\n```\n"
    assert readme_examples.check_structure(unclosed)
    unknown = "<!-- readme-example: nope -->\n```json\n{}\n```\n<!-- /readme-example -->\n"
    assert readme_examples.check_structure(unknown) == ["unknown example 'nope'"]
    assert readme_examples.render({"a": 1.23456, "b": [2.0049]}) == '{"a": 1.23, "b": [2.0]}\n'


def test_readme_commands_define_what_they_use():
    """Issue 14 item 2: `$TOKEN` was used and never defined (every PUT got 401), `digit.png` was
    sent and never made, and the text named internal planning ("issue 6's other half")."""
    lines = (ROOT / "README.md").read_text().splitlines()
    first_token_use = next(i for i, line in enumerate(lines) if "$TOKEN" in line)
    assert any("TOKEN=" in line for line in lines[:first_token_use]), "define TOKEN before its first use"
    first_png_use = next(i for i, line in enumerate(lines) if "base64 -w0 digit.png" in line)
    assert any(".save('digit.png')" in line for line in lines[:first_png_use]), "say how to make digit.png"
    planning = [line for line in lines if re.search(r"\bissue \d+\b|other half", line, re.IGNORECASE)]
    assert planning == []
