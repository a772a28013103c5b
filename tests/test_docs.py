"""The documentation holds to the code: docs/configuration.md's settings tables name exactly the
environment variables wrenn/settings.py reads, with its defaults; every relative link in the
README and docs/ reaches a file (and a heading) that exists; the README stays a front page."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.hostagent import REPO_ROOT

SETTINGS = REPO_ROOT / "wrenn" / "settings.py"
CONFIGURATION = REPO_ROOT / "docs" / "configuration.md"
README = REPO_ROOT / "README.md"
DOCS = sorted((REPO_ROOT / "docs").glob("*.md"))
# bench/README.md links into docs/, so a heading renamed there must not break it either.
LINKED_PAGES = [README, *DOCS, REPO_ROOT / "bench" / "README.md"]
SETTINGS_SECTION = "## Control plane settings"
TABLE_HEADER = "| variable | default | meaning |"
# A row documented ahead of the code that reads it; the mark goes once settings.py reads it.
PENDING = "*(pending)*"
README_MAX_LINES = 120


class DocsError(Exception):
    """Something in a page or in settings.py this test cannot read: the message says what and where."""


# --- wrenn/settings.py: the environment variables it reads, with their defaults -----------------

# Names whose value a default may be built from (relative to the repository's root).
KNOWN_PATHS = {"BASE_DIR": ""}


def _is_env_read(call: ast.Call) -> bool:
    """`_env(...)`, `_env_int(...)` and any other `_env*` helper, or `os.environ.get` / `os.getenv`."""
    func = call.func
    if isinstance(func, ast.Name):
        return func.id.startswith("_env")
    return ast.unparse(func) in ("os.environ.get", "os.getenv")


def _default_text(node: ast.expr, names: dict[str, str], variable: str) -> str:
    """The default as the environment would spell it: "" for none, paths relative to the repository."""
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, str | int | float)
        and not isinstance(node.value, bool)
    ):
        return str(node.value)
    if isinstance(node, ast.Constant) and node.value is None:
        return ""
    if isinstance(node, ast.Name) and node.id in names:
        return names[node.id]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):  # Path / "part"
        parts = (_default_text(node.left, names, variable), _default_text(node.right, names, variable))
        return "/".join(part for part in parts if part)
    if isinstance(node, ast.Call) and ast.unparse(node.func) in ("str", "Path") and len(node.args) == 1:
        return _default_text(node.args[0], names, variable)
    if isinstance(node, ast.JoinedStr):
        return "".join(
            _default_text(part.value if isinstance(part, ast.FormattedValue) else part, names, variable)
            for part in node.values
        )
    raise DocsError(
        f"cannot read the default of {variable} in wrenn/settings.py ({ast.unparse(node)}): "
        "give it a literal default, or teach tests/test_docs.py to read this one"
    )


def settings_env_reads(source: str) -> dict[str, str]:
    """Every environment variable the settings read by name, with its default ("" when unset)."""
    names = dict(KNOWN_PATHS)
    reads: dict[str, str] = {}
    for statement in ast.parse(source).body:
        found: list[str] = []
        for node in ast.walk(statement):
            if not (isinstance(node, ast.Call) and _is_env_read(node) and node.args):
                continue
            first = node.args[0]
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                continue  # a helper's own body, reading the name it was given
            variable = first.value
            keyword = next((kw.value for kw in node.keywords if kw.arg == "default"), None)
            default_node = node.args[1] if len(node.args) > 1 else keyword
            default = "" if default_node is None else _default_text(default_node, names, variable)
            if reads.get(variable, default) != default:
                raise DocsError(
                    f"wrenn/settings.py reads {variable} with two defaults: "
                    f"{reads[variable]!r} and {default!r}"
                )
            reads[variable] = default
            found.append(variable)
        # A module-level name set from one variable (DATA_DIR) lends its default to later ones.
        if isinstance(statement, ast.Assign) and len(found) == 1 and len(statement.targets) == 1:
            target = statement.targets[0]
            if isinstance(target, ast.Name):
                names[target.id] = reads[found[0]]
    if not reads:
        raise DocsError("found no environment variable read in wrenn/settings.py")
    return reads


# --- docs/configuration.md: the settings tables -------------------------------------------------


@dataclass(frozen=True)
class Row:
    default: str  # "" for "unset"
    pending: bool


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def documented_settings(markdown: str) -> dict[str, Row]:
    """The rows of every table in the settings section: variable, default, whether pending."""
    if SETTINGS_SECTION not in markdown:
        raise DocsError(f"docs/configuration.md has no section {SETTINGS_SECTION!r}")
    section = markdown.split(SETTINGS_SECTION, 1)[1]
    section = re.split(r"^## ", section, maxsplit=1, flags=re.MULTILINE)[0]
    rows: dict[str, Row] = {}
    header_seen = False
    for line in section.splitlines():
        if not line.startswith("|"):
            header_seen = False
            continue
        if not header_seen:
            if _cells(line) != _cells(TABLE_HEADER):
                raise DocsError(f"a settings table must start with {TABLE_HEADER!r}, not {line!r}")
            header_seen = True
            continue
        cells = _cells(line)
        if set(line.replace("|", "").strip()) <= {"-", ":", " "}:
            continue  # the separator row
        if len(cells) != 3:
            raise DocsError(f"a settings row has three cells (variable, default, meaning): {line!r}")
        name_cell, default_cell, _ = cells
        pending = name_cell.endswith(PENDING)
        name = re.fullmatch(r"`([A-Z][A-Z0-9_]*)`", name_cell.removesuffix(PENDING).strip())
        if name is None:
            raise DocsError(f"a settings row names one variable, as `NAME` (optionally {PENDING}): {line!r}")
        literal = re.match(r"`([^`]*)`", default_cell)
        if literal is not None:
            default = literal.group(1)
        elif re.match(r"unset\b", default_cell):
            default = ""
        else:
            raise DocsError(f"the default of {name.group(1)} must start with `value` or unset: {line!r}")
        if name.group(1) in rows:
            raise DocsError(f"{name.group(1)} has two rows in docs/configuration.md")
        rows[name.group(1)] = Row(default, pending)
    if not rows:
        raise DocsError(f"docs/configuration.md has no settings table under {SETTINGS_SECTION!r}")
    return rows


@pytest.fixture(scope="module")
def read() -> dict[str, str]:
    return settings_env_reads(SETTINGS.read_text())


@pytest.fixture(scope="module")
def documented() -> dict[str, Row]:
    return documented_settings(CONFIGURATION.read_text())


def test_every_variable_settings_reads_has_a_row(read: dict[str, str], documented: dict[str, Row]) -> None:
    missing = sorted(set(read) - set(documented))
    assert not missing, f"wrenn/settings.py reads {missing}, which docs/configuration.md does not list"


def test_every_row_names_a_variable_settings_reads(read: dict[str, str], documented: dict[str, Row]) -> None:
    stale = sorted(name for name, row in documented.items() if not row.pending and name not in read)
    assert not stale, f"docs/configuration.md lists {stale}, which wrenn/settings.py does not read"


def test_a_pending_row_is_one_settings_does_not_read_yet(
    read: dict[str, str], documented: dict[str, Row]
) -> None:
    arrived = sorted(name for name, row in documented.items() if row.pending and name in read)
    assert not arrived, (
        f"wrenn/settings.py reads {arrived} now: remove {PENDING} from their rows in "
        "docs/configuration.md (their defaults are then checked)"
    )


def test_documented_defaults_are_the_defaults_of_settings(
    read: dict[str, str], documented: dict[str, Row]
) -> None:
    wrong = {
        name: {"docs": row.default, "settings.py": read[name]}
        for name, row in documented.items()
        if not row.pending and name in read and row.default != read[name]
    }
    assert not wrong, f"defaults in docs/configuration.md differ from wrenn/settings.py: {wrong}"


def test_settings_reads_are_found_in_every_form() -> None:
    source = """
import os
from pathlib import Path
BASE_DIR = Path(__file__).parent
_env = os.environ.get
def _env_int(name, default, low=0):
    return int(_env(name, str(default)))
DEBUG = _env("A_FLAG", "0") == "1"
COUNT = _env_int("A_COUNT", 20, low=1)
RATE = float(_env("A_RATE", "0.5"))
TOKEN = os.environ.get("A_TOKEN")
MODE = _env_choice("A_MODE", default="json")
DATA_DIR = Path(_env("A_DIR", str(BASE_DIR / "var")))
URL = _env("A_URL", f"sqlite:///{DATA_DIR / 'db.sqlite3'}")
"""
    assert settings_env_reads(source) == {
        "A_FLAG": "0",
        "A_COUNT": "20",
        "A_RATE": "0.5",
        "A_TOKEN": "",
        "A_MODE": "json",
        "A_DIR": "var",
        "A_URL": "sqlite:///var/db.sqlite3",
    }


def test_a_default_the_test_cannot_read_is_an_error_naming_the_variable() -> None:
    with pytest.raises(DocsError, match=r"cannot read the default of A_HOSTS .*\(default_hosts\(\)\)"):
        settings_env_reads('A = _env("A_HOSTS", default_hosts())')


def test_a_variable_read_with_two_defaults_is_an_error() -> None:
    with pytest.raises(DocsError, match=r"reads A_PORT with two defaults: '80' and '8080'"):
        settings_env_reads('A = _env("A_PORT", "80")\nB = _env_int("A_PORT", 8080)')


def test_settings_without_environment_reads_are_an_error() -> None:
    with pytest.raises(DocsError, match="found no environment variable read"):
        settings_env_reads("DEBUG = False")


TABLE = f"""# Configuration

{SETTINGS_SECTION}

### One group

{TABLE_HEADER}
|---|---|---|
| `A_FLAG` | `0` | `1`: on |
| `A_TOKEN` | unset: nothing sent | a token |

### Another

{TABLE_HEADER}
|---|---|---|
| `A_NEW` {PENDING} | `1000` (1 s) | coming |

## Host agent flags

| flag | environment | default | meaning |
|---|---|---|---|
| `--listen` | `HOSTAGENT_LISTEN` | `127.0.0.1:50071` | not a setting |
"""


def test_settings_tables_are_read_from_their_section_only() -> None:
    assert documented_settings(TABLE) == {
        "A_FLAG": Row("0", pending=False),
        "A_TOKEN": Row("", pending=False),
        "A_NEW": Row("1000", pending=True),
    }


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("| `A_ONE`, `A_TWO` | `1` | two |", r"names one variable"),
        ("| A_BARE | `1` | bare |", r"names one variable"),
        ("| `A_FLAG` | 1 | bare default |", r"the default of A_FLAG must start with `value` or unset"),
        ("| `A_FLAG` | `1` |", r"has three cells"),
        ("| `A_FLAG` | `1` | again |", r"A_FLAG has two rows"),
    ],
)
def test_a_malformed_settings_row_is_an_error_naming_it(row: str, message: str) -> None:
    page = TABLE.replace("| `A_TOKEN` |", f"{row}\n| `A_TOKEN` |")
    with pytest.raises(DocsError, match=message):
        documented_settings(page)


def test_a_settings_table_needs_its_header() -> None:
    page = TABLE.replace(TABLE_HEADER, "| name | default | meaning |", 1)
    with pytest.raises(DocsError, match=r"must start with '\| variable \| default \| meaning \|'"):
        documented_settings(page)


def test_a_page_without_the_settings_section_is_an_error() -> None:
    with pytest.raises(DocsError, match="has no section '## Control plane settings'"):
        documented_settings("# Configuration\n\n| variable | default | meaning |\n")


# --- links ----------------------------------------------------------------------------------------

FENCE = re.compile(r"^```.*?^```[^\n]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]]*\]\(\s*([^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)


def headings_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces as hyphens,
    and -1, -2 … after a repeated one."""
    anchors: set[str] = set()
    for line in FENCE.sub("", markdown).splitlines():
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading is None:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).lower()).replace(" ", "-")
        anchor, n = slug, 0
        while anchor in anchors:
            n += 1
            anchor = f"{slug}-{n}"
        anchors.add(anchor)
    return anchors


def relative_links(markdown: str) -> list[str]:
    """Targets of the page's links that are not URLs, outside code blocks and code spans."""
    text = CODE_SPAN.sub("", FENCE.sub("", markdown))
    return [target for target in LINK.findall(text) if not SCHEME.match(target)]


def broken_links(page: Path, root: Path) -> list[str]:
    """Each link of the page to a file that does not exist, or to a heading its page does not have."""
    broken = []
    for target in relative_links(page.read_text()):
        path_part, _, anchor = target.partition("#")
        linked = (page.parent / path_part).resolve() if path_part else page
        where = f"{page.relative_to(root)}: {target}"
        if not linked.exists():
            broken.append(f"{where}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in headings_anchors(linked.read_text()):
            broken.append(f"{where}: no heading with the anchor #{anchor}")
    return broken


@pytest.mark.parametrize("page", LINKED_PAGES, ids=lambda page: str(page.relative_to(REPO_ROOT)))
def test_every_relative_link_reaches_a_file_and_heading_that_exist(page: Path) -> None:
    broken = broken_links(page, REPO_ROOT)
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_broken_links_names_each_missing_file_and_heading(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "ops.md").write_text("# Ops\n\n## `make run`: the quick start\n\n## Tests\n")
    (tmp_path / "README.md").write_text(
        "[ok](docs/ops.md#make-run-the-quick-start) [ok](docs/ops.md#tests) [web](https://example.com)\n"
        "[gone](docs/gone.md) [no heading](docs/ops.md#secrets) [here](#readme) [self](#nowhere)\n"
        "`[code](docs/code.md)`\n\n```\n[fenced](docs/fenced.md)\n```\n\n# Readme\n"
    )
    assert broken_links(tmp_path / "README.md", tmp_path) == [
        "README.md: docs/gone.md: no such file",
        "README.md: docs/ops.md#secrets: no heading with the anchor #secrets",
        "README.md: #nowhere: no heading with the anchor #nowhere",
    ]


def test_repeated_headings_get_numbered_anchors() -> None:
    assert headings_anchors("# Errors\n## Errors\n### Flow control, *briefly*\n") == {
        "errors",
        "errors-1",
        "flow-control-briefly",
    }


# --- the README, a front page ---------------------------------------------------------------------


def test_the_readme_stays_a_front_page() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines (at most {README_MAX_LINES}): what it is, the two commands and "
        "a map; move the details to docs/"
    )


def test_the_readme_links_every_page_of_docs() -> None:
    linked = {
        (README.parent / target.partition("#")[0]).resolve() for target in relative_links(README.read_text())
    }
    unlinked = [str(page.relative_to(REPO_ROOT)) for page in DOCS if page.resolve() not in linked]
    assert not unlinked, f"README.md does not link {unlinked}"


def test_the_readme_commands_are_make_targets_and_ci_runs_the_test_command() -> None:
    targets = set(re.findall(r"^([\w-]+):", (REPO_ROOT / "Makefile").read_text(), flags=re.MULTILINE))
    named = set(re.findall(r"\bmake ([\w-]+)", README.read_text()))
    assert {"run", "test"} <= named
    assert named <= targets, f"README.md names make targets the Makefile lacks: {sorted(named - targets)}"
    ci_commands = [line.strip() for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines()]
    assert "make test" in ci_commands
