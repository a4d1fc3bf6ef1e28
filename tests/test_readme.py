"""The README's worked example is a study that registers, expands and validates, and the
README keeps exactly the two set-up commands of a fresh machine."""

from __future__ import annotations

import os
import re

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def _text() -> str:
    with open(README) as f:
        return f.read()


def test_readme_keeps_the_two_set_up_commands():
    text = _text()
    assert "    python3 -m pip install -e . && weaklab run tau-sweep\n" in text
    assert '    python3 -m pip install -e ".[test]" && python3 -m pytest\n' in text
    assert len(text.splitlines()) <= 210


def test_readme_example_study_registers_and_expands(monkeypatch):
    from weaklab import study as ws

    block = re.search(r"<!-- example study[^>]*-->\n```python\n(.*?)```", _text(), re.S).group(1)
    # a registry of its own, so the example's name cannot collide with a real study
    monkeypatch.setattr(ws, "STUDIES", ws.Registry("study"))
    namespace: dict = {}
    exec(compile(block, "README example", "exec"), namespace)
    example = namespace["STUDY"]
    assert example.name in ws.STUDIES
    configs = ws.expand(example)
    assert len(configs) == (1 + 4) * example.seeds
    assert {c["method"] for c in configs} == {"ce", "gce"}
    smoke = ws.expand(ws.resolve(example, smoke=True))
    assert {c["train.epochs"] for c in smoke} == {2}
