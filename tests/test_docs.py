"""The docs stay true: every setting and every error code is documented, the README stays short
and its common settings are real ones, the contract copy holds every agreed line, and no link
points at nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stt_service.config import Settings
from stt_service.protocol import Code

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text()
CONFIGURATION = (DOCS / "configuration.md").read_text()
PROTOCOL = (DOCS / "protocol.md").read_text()
SETTINGS = [n.upper() for n in Settings.model_fields]
MARKDOWN = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]

# a settings table's row: | `NAME` | default | meaning |
ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]*)` \| (.*?) \| .* \|$", re.M)


def _section(text: str, heading: str) -> str:
    """The text under a ``## heading``, up to the next heading of that level."""
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _settings_rows(text: str) -> dict[str, str]:
    """Each settings row's variable -> its default cell."""
    return {name: default for name, default in ROW.findall(text)}


@pytest.mark.parametrize("name", SETTINGS)
def test_every_setting_is_in_the_configuration_reference(name: str) -> None:
    assert f"| `{name}` |" in CONFIGURATION


def test_the_configuration_reference_names_only_real_settings() -> None:
    unknown = set(_settings_rows(CONFIGURATION)) - set(SETTINGS)
    assert not unknown, f"docs/configuration.md has rows for no setting: {sorted(unknown)}"


def test_the_readme_table_holds_common_settings_as_the_reference_has_them() -> None:
    common = _settings_rows(_section(README, "## Configuration"))
    assert 15 <= len(common) <= 25, f"{len(common)} rows: the README keeps the common ones"
    unknown = set(common) - set(SETTINGS)
    assert not unknown, f"the README's table names no such setting: {sorted(unknown)}"
    full = _settings_rows(CONFIGURATION)
    differ = {n: (d, full[n]) for n, d in common.items() if d != full[n]}
    assert not differ, f"defaults differ from docs/configuration.md: {differ}"


@pytest.mark.parametrize(
    "code", [v for k, v in vars(Code).items() if k.isupper() and isinstance(v, str)]
)
def test_every_error_code_is_documented(code: str) -> None:
    assert f"`{code}`" in _section(PROTOCOL, "## Errors")


def test_readme_starts_with_the_two_commands() -> None:
    block = README.split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["pip install uv && uv run stt-service demo", "bash .ci/run"]
    assert "uv run pytest" in (ROOT / ".ci" / "run").read_text()


def test_the_readme_is_read_in_ten_minutes() -> None:
    lines = len(README.splitlines())
    assert lines < 420, f"README.md has {lines} lines: move the long explanations to docs/"


def test_the_readme_benchmark_table_names_the_commands_that_measure_it() -> None:
    table = _section(README, "## Benchmarks")
    for command in ("bench/run.py --sessions 1,4,8", "bench/bargein.py --quick", "bench/turns.py"):
        assert command in table


def test_the_contract_copy_holds_every_line_of_the_shared_contract() -> None:
    """The shared contract may be ahead of this version, never the other way round: every agreed
    line is in the copy (the parts not served yet in its last section), none dropped or changed."""
    shared = ROOT.parent / "shared" / "CONTRACT.md"
    if not shared.exists():
        pytest.skip("no ../shared checkout beside this clone")
    copy = set((DOCS / "CONTRACT.md").read_text().splitlines())
    agreed = [line for line in shared.read_text().splitlines() if line.strip()]
    missing = "\n".join(line for line in agreed if line not in copy)
    assert not missing, f"lines of ../shared/CONTRACT.md not in docs/CONTRACT.md:\n{missing}"


def _anchors(text: str) -> set[str]:
    """The anchors GitHub gives a file's headings: lower case, punctuation dropped, spaces to -."""
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", _without_code(text), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        n, candidate = 1, slug
        while candidate in found:
            candidate, n = f"{slug}-{n}", n + 1
        found.add(candidate)
    return found


def _without_code(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_something(path: Path) -> None:
    text = path.read_text()
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", _without_code(text)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked.read_text()):
            broken.append(f"{target}: no such heading")
    assert not broken, f"{path.relative_to(ROOT)}: " + "; ".join(broken)


@pytest.mark.parametrize(
    "path",
    [p for p in MARKDOWN if p.parent == DOCS and p.name != "CONTRACT.md"],
    ids=lambda p: p.name,
)
def test_every_doc_says_what_it_holds_and_links_back_to_the_readme(path: Path) -> None:
    first = path.read_text().split("\n\n")[1]
    assert "../README.md" in first, f"{path.name}: its first paragraph links the README"
