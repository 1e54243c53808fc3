"""The README stays true: every setting and every error code is documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from stt_service.config import Settings
from stt_service.protocol import Code

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("name", [n.upper() for n in Settings.model_fields])
def test_every_setting_is_in_the_readme_table(name: str) -> None:
    assert f"| `{name}` |" in README


@pytest.mark.parametrize(
    "code", [v for k, v in vars(Code).items() if k.isupper() and isinstance(v, str)]
)
def test_every_error_code_is_documented(code: str) -> None:
    assert f"`{code}`" in README


def test_readme_starts_with_the_two_commands() -> None:
    block = README.split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["pip install uv && uv run stt-service demo", "bash .ci/run"]
    assert "uv run pytest" in (ROOT / ".ci" / "run").read_text()


def test_contract_copy_matches_the_shared_contract() -> None:
    shared = ROOT.parent / "shared" / "CONTRACT.md"
    if not shared.exists():
        pytest.skip("no ../shared checkout beside this clone")
    assert (ROOT / "docs" / "CONTRACT.md").read_text() == shared.read_text()
