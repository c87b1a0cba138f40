"""The example configurations in the docs stay valid as the config schema changes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from sluice.settings import parse_settings

DOCS = Path(__file__).resolve().parent.parent / "docs"
_YAML_BLOCK = re.compile(r"```ya?ml\n(.*?)```", re.S)
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


def _channel_examples() -> list[tuple[str, str]]:
    return [
        (f"{path.name}#{number}", block)
        for path in sorted(DOCS.glob("*.md"))
        for number, block in enumerate(_YAML_BLOCK.findall(path.read_text(encoding="utf-8")))
        if re.search(r"^\s*-?\s*type:", block, re.M)
    ]


EXAMPLES = _channel_examples()


def test_the_docs_have_channel_examples() -> None:
    names = {name.split("#")[0] for name, _ in EXAMPLES}
    assert {"config.md", "providers.md"} <= names


@pytest.mark.parametrize(("where", "block"), EXAMPLES, ids=[name for name, _ in EXAMPLES])
def test_every_channel_example_in_the_docs_parses(
    where: str, block: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in _ENV.findall(block):
        monkeypatch.setenv(name, "x" * 40)  # admin keys need 32 characters
    raw: Any = yaml.safe_load(block)
    if isinstance(raw, list):  # a channel list on its own
        raw = {"channels": raw}
    settings = parse_settings(raw)
    assert settings.channels, where
    for channel in settings.channels:
        assert channel.name
