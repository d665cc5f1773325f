"""The folder table of the package, checked on its source with ``ast``: the tree is the architecture.

Every import counts, also one inside a function or under ``if TYPE_CHECKING``: a lazy import
is still a dependency. ``docs/architecture.md`` shows the same table in words.
"""
from __future__ import annotations

import ast
import shutil
from pathlib import Path

import inboxcrm

PACKAGE = Path(inboxcrm.__file__).parent

# The vocabulary every layer shares; it may use the pure core (addresses, printable text) and nothing else.
SHARED = ("inboxcrm", "inboxcrm.config", "inboxcrm.values", "inboxcrm.errors", "inboxcrm.logs",
          "inboxcrm.secret", "inboxcrm.private_files", "inboxcrm.clock")

# layer -> the layers of the package it may import. The core may use only values and errors of the shared
# vocabulary: it takes values, never a config or a secret. Nothing imports cli but __main__.
MAY_IMPORT = {
    "core": ("core", "inboxcrm", "inboxcrm.values", "inboxcrm.errors"),
    "shared": ("shared", "core"),
    "store": ("store", "shared", "core"),
    "mail": ("mail", "shared", "core"),
    "app": ("app", "store", "mail", "shared", "core"),
    "cli": ("cli", "app", "store", "mail", "shared", "core"),
    "main": ("cli", "shared"),
}

# third-party packages that belong to one layer (or module) only
ONLY_IN = {
    "sqlalchemy": ("store",),
    "alembic": ("store",),
    "click": ("cli",),
    "mailparser": ("inboxcrm.core.parse",),
    "rapidfuzz": ("inboxcrm.core.duplicates",),
    "imapclient": ("mail",),
    "smtplib": ("mail",),
    "jinja2": ("mail",),
    "apscheduler": ("inboxcrm.app.daemon",),
    "prometheus_client": ("inboxcrm.app.metrics",),
}


def layer(module: str) -> str:
    if module == "inboxcrm.__main__":
        return "main"
    if module in SHARED:
        return "shared"
    return module.split(".")[1]


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path) -> set[str]:
    """Every module ``path`` imports, relative imports resolved; ``from M import n`` also counts
    ``M.n`` when that is a module of the package (``from inboxcrm.app import deals`` imports
    inboxcrm.app.deals)."""
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


def _allowed(module: str, target: str) -> bool:
    mine = layer(module)
    allowed = MAY_IMPORT[mine]
    if target in SHARED:
        return "shared" in allowed or target in allowed
    return layer(target) in allowed


def _owner_allows(module: str, owners: tuple[str, ...]) -> bool:
    return any(layer(module) == o or _within(module, (o,)) for o in owners)


def violations(root: Path = PACKAGE) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        for target in sorted(imports(path, root)):
            if _within(target, ("inboxcrm",)):
                if target != module and not _allowed(module, target):
                    found.append(f"{module} imports {target} ({layer(module)} may import only "
                                 f"{', '.join(MAY_IMPORT[layer(module)])})")
                continue
            for package, owners in ONLY_IN.items():
                if _within(target, (package,)) and not _owner_allows(module, owners):
                    found.append(f"{module} imports {target} (only {', '.join(owners)} may use {package})")
    return found


def test_the_package_keeps_its_layers():
    found = violations()
    assert not found, "layering broken:\n" + "\n".join(found)


def test_every_module_sits_in_a_layer_of_the_table():
    modules = {module_name(p, PACKAGE) for p in PACKAGE.rglob("*.py")}
    assert {layer(m) for m in modules} <= set(MAY_IMPORT), sorted(m for m in modules if layer(m) not in MAY_IMPORT)


def test_the_check_sees_the_imports_it_guards():
    """The check reads the real modules: what they import today, relative imports resolved."""
    core = PACKAGE / "core"
    assert {"inboxcrm.core.classify", "inboxcrm.core.forms", "inboxcrm.core.match"} <= imports(core / "decide.py", PACKAGE)
    assert "mailparser" in imports(core / "parse.py", PACKAGE)
    assert "inboxcrm.cli" in imports(PACKAGE / "__main__.py", PACKAGE)
    assert {"inboxcrm.errors", "inboxcrm.core.parse"} <= imports(PACKAGE / "mail" / "local.py", PACKAGE)


def test_violating_imports_are_reported(tmp_path):
    """A copy of the package with forbidden imports added, in each form an import can take."""
    root = tmp_path / "inboxcrm"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__", "sample"))
    added = {
        "values.py": "import sqlalchemy.orm\n",
        "app/deals.py": "def later():\n    from sqlalchemy import select\n",
        "core/match.py": "from ..store import records\n",
        "core/rules.py": "def later():\n    from inboxcrm import config\n",
        "core/scoring.py": "import mailparser\n",
        "store/records.py": "import click\n",
        "store/db.py": "from inboxcrm.app import deals\n",
        "mail/local.py": "from ..cli import main\n",
        "app/intake.py": "from inboxcrm import cli\n",
    }
    for name, line in added.items():
        with open(root / name, "a", encoding="utf-8") as f:
            f.write(line)
    assert [v.split(" (")[0] for v in violations(root)] == [
        "inboxcrm.app.deals imports sqlalchemy",
        "inboxcrm.app.intake imports inboxcrm.cli",
        "inboxcrm.core.match imports inboxcrm.store",
        "inboxcrm.core.match imports inboxcrm.store.records",
        "inboxcrm.core.rules imports inboxcrm.config",
        "inboxcrm.core.scoring imports mailparser",
        "inboxcrm.mail.local imports inboxcrm.cli",
        "inboxcrm.store.db imports inboxcrm.app",
        "inboxcrm.store.db imports inboxcrm.app.deals",
        "inboxcrm.store.records imports click",
        "inboxcrm.values imports sqlalchemy.orm",
    ]
