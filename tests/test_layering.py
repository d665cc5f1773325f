"""The layering of the package, checked on its source with ``ast``: the pure core stays pure.

Every import counts, also one inside a function or under ``if TYPE_CHECKING``: a lazy import
is still a dependency.
"""
from __future__ import annotations

import ast
import shutil
from pathlib import Path

import inboxcrm

PACKAGE = Path(inboxcrm.__file__).parent
CORE = {f"inboxcrm.{name}" for name in (
    "values", "parse", "classify", "freemail", "forms", "match", "rules", "scoring", "decide", "parse_ahead", "errors",
    "digest", "logs", "business_time", "views", "inputs", "commands", "forwards", "sender_check", "addresses",
    "html_text", "private_files",
)}
CORE_FORBIDS = ("sqlalchemy", "alembic", "imapclient", "smtplib", "click")
ADAPTERS = ("inboxcrm.store", "inboxcrm.db", "inboxcrm.importer", "inboxcrm.sources", "inboxcrm.sync",
            "inboxcrm.digest_store", "inboxcrm.render")


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path) -> set[str]:
    """Every module ``path`` imports, relative imports resolved; ``from M import n`` also counts
    ``M.n`` when that is a module of the package (``from . import cli`` imports inboxcrm.cli)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found.add(base)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if _is_module(sub, root):
                    found.add(sub)
    return found


def _is_module(dotted: str, root: Path) -> bool:
    if dotted.split(".")[0] != root.name:
        return False
    path = root.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _within(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _is_cli(module: str) -> bool:
    """The command line is cli.py plus the cli_* modules that register their commands on it."""
    return module == "inboxcrm.__main__" or module.startswith("inboxcrm.cli_")


def violations(root: Path = PACKAGE) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        for target in sorted(imports(path, root)):
            if module in CORE and (_within(target, CORE_FORBIDS) or (_within(target, ("inboxcrm",))
                                                                      and target not in CORE | {"inboxcrm"})):
                found.append(f"{module} imports {target} (the pure core takes values, not adapters)")
            if _within(target, ("mailparser",)) and module != "inboxcrm.parse":
                found.append(f"{module} imports {target} (only inboxcrm.parse may use mail-parser)")
            if target == "inboxcrm.cli" and not _is_cli(module):
                found.append(f"{module} imports {target} (only inboxcrm.__main__ may use the CLI)")
            if _within(module, ADAPTERS) and _within(target, ("click",)):
                found.append(f"{module} imports {target} (adapters know nothing of the command line)")
    return found


def test_the_package_keeps_its_layers():
    found = violations()
    assert not found, "layering broken:\n" + "\n".join(found)


def test_the_check_sees_the_imports_it_guards():
    """The check reads the real modules: what they import today, relative imports resolved."""
    assert {"inboxcrm.classify", "inboxcrm.forms", "inboxcrm.match"} <= imports(PACKAGE / "decide.py", PACKAGE)
    assert "mailparser" in imports(PACKAGE / "parse.py", PACKAGE)
    assert "inboxcrm.cli" in imports(PACKAGE / "__main__.py", PACKAGE)
    assert {"inboxcrm.errors", "inboxcrm.parse"} <= imports(PACKAGE / "sources" / "local.py", PACKAGE)


def test_violating_imports_are_reported(tmp_path):
    """A copy of the package with forbidden imports added, in each form an import can take."""
    root = tmp_path / "inboxcrm"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__", "sample"))
    added = {
        "values.py": "import sqlalchemy.orm\n",
        "match.py": "from .store import Store\n",
        "rules.py": "def later():\n    from . import config\n",
        "scoring.py": "import mailparser\n",
        "store.py": "import click\n",
        "sources/local.py": "from ..cli import main\n",
        "pipeline.py": "from inboxcrm import cli\n",
    }
    for name, line in added.items():
        with open(root / name, "a", encoding="utf-8") as f:
            f.write(line)
    assert [v.split(" (")[0] for v in violations(root)] == [
        "inboxcrm.match imports inboxcrm.store",
        "inboxcrm.pipeline imports inboxcrm.cli",
        "inboxcrm.rules imports inboxcrm.config",
        "inboxcrm.scoring imports mailparser",
        "inboxcrm.sources.local imports inboxcrm.cli",
        "inboxcrm.store imports click",
        "inboxcrm.values imports sqlalchemy.orm",
    ]
