"""The docs a user and a newcomer rely on stay true to the code: the layout block of
docs/architecture.md is the tree, every link leads somewhere, every configuration key is
documented, and the README keeps the two commands that set everything up.

Pure file reading: no database, no servers.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import inboxcrm
from inboxcrm.config import DEPRECATED_KEYS, KEYS

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(inboxcrm.__file__).resolve().parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md")), ROOT / "systemd" / "README.md"]


def package_modules() -> set[str]:
    """Every module file of the package, as a path from the repository root; the Alembic
    revisions and the ``__init__`` files are not listed one by one."""
    return {
        path.relative_to(PACKAGE.parent).as_posix()
        for path in PACKAGE.rglob("*.py")
        if path.name != "__init__.py" and "versions" not in path.relative_to(PACKAGE).parts
    }


def layout_block(text: str) -> list[str]:
    """The first code block under the ``## Layout`` heading."""
    section = text.split("\n## Layout\n", 1)[1]
    block = section.split("```", 2)[1]
    return block.split("\n")[1:]  # the fence's own line (language tag) is not part of the tree


def layout_paths(lines: list[str]) -> set[str]:
    """The files and folders the block names, from its indentation: two spaces per level."""
    paths, stack = set(), []
    for line in lines:
        if not line.strip():
            continue
        depth = (len(line) - len(line.lstrip(" "))) // 2
        name = line.split()[0]
        del stack[depth:]
        path = "/".join([*stack, name.rstrip("/")])
        paths.add(path)
        if name.endswith("/"):
            stack.append(name.rstrip("/"))
    return paths


def test_the_architecture_layout_is_the_tree():
    named = layout_paths(layout_block((DOCS / "architecture.md").read_text(encoding="utf-8")))
    listed = {p for p in named if p.startswith("inboxcrm/") and p.endswith(".py")}
    missing = sorted(package_modules() - listed)
    gone = sorted(p for p in listed if not (ROOT / p).is_file())
    assert not missing, f"modules missing from docs/architecture.md's layout: {missing}"
    assert not gone, f"docs/architecture.md names modules that do not exist: {gone}"


def test_the_layout_reader_follows_indentation():
    lines = ["inboxcrm/      the package", "  core/        pure", "    parse.py   bytes", "  values.py    values",
             "docs/          pages"]
    assert layout_paths(lines) == {"inboxcrm", "inboxcrm/core", "inboxcrm/core/parse.py", "inboxcrm/values.py", "docs"}


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[|\]\([^)]*\)", "", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found, seen, fenced = set(), {}, False
    for line in path.read_text(encoding="utf-8").split("\n"):
        if line.startswith("```"):
            fenced = not fenced
            continue
        match = None if fenced else re.match(r"#{1,6} (.+)", line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[str]:
    """Relative link targets outside code blocks and code spans."""
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+:", t)]


def test_the_slug_is_githubs():
    assert slug("Quarantine and `rule explain`") == "quarantine-and-rule-explain"
    assert slug("sales@ as a Google Group") == "sales-as-a-google-group"
    assert slug('How the sync keeps "exactly once"') == "how-the-sync-keeps-exactly-once"
    assert slug("Forwarding a prospect's email") == "forwarding-a-prospects-email"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_leads_to_a_file_and_heading(page):
    broken = []
    for target in links(page):
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, f"broken links in {page.relative_to(ROOT)}:\n" + "\n".join(broken)


def documented_keys(text: str) -> set[str]:
    """``section.key`` for each key named in the first cell of a row of a table of keys:
    ``| `[smtp] password_env`, `password_file` | ...``."""
    found = set()
    for row in re.findall(r"^\| (`\[[a-z]+\] [^|]+)\|", text, flags=re.M):
        section = re.match(r"`\[([a-z]+)\]", row).group(1)
        for key in re.findall(r"`(?:\[[a-z]+\] )?([a-z_]+)`", row):
            found.add(f"{section}.{key}")
    return found


def test_every_configuration_key_is_documented():
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    keys = {f"{section}.{key}" for section, names in KEYS.items() for key in names} - set(DEPRECATED_KEYS)
    assert keys, "no keys read from inboxcrm.config"
    missing = sorted(keys - documented_keys(text))
    assert not missing, f"keys not in docs/configuration.md: {missing}"


def test_renamed_keys_name_their_new_name():
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    for old, new in DEPRECATED_KEYS.items():
        row = "| `[{}] {}` | `[{}] {}` |".format(*old.split("."), *new.split("."))
        assert row in text, f"docs/configuration.md lacks the row: {row}"


def test_the_readme_keeps_the_two_setup_commands():
    """``.ci/run`` runs ``make test``; a newcomer starts with ``make demo``."""
    text = README.read_text(encoding="utf-8")
    assert "```sh\nmake demo\nmake test\n```" in text
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)


def test_every_figure_is_defined_in_the_readme_and_the_reports_page_as_the_code_computes_it():
    """The definitions are written once, in core.metrics; a figure whose meaning changes in the code
    must change its sentence, and the README and docs/reports.md must then say the same."""
    from inboxcrm.core.metrics import DEFINITIONS

    for page in (README, DOCS / "reports.md"):
        text = " ".join(page.read_text(encoding="utf-8").split())
        missing = [key for key, sentence in DEFINITIONS.items() if f"- {sentence}" not in text]
        assert not missing, f"{page.name} lacks the definitions of {missing}"
