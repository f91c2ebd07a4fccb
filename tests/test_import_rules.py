"""Import rules between PeiTu's packages, checked by reading the source (AST, nothing imported).

The rules (imports point one way: edges -> core -> settings):

1. `config/` imports nothing of ours: no `index`, `client`, `bot`, `server`, `cli`.
2. `index/` (the core) imports no edge (`bot`, `server`, `cli`, `client`) and no edge framework
   (`wechaty`, `fastapi`, `starlette`, `uvicorn`).
3. `bot/` imports neither `server` nor `cli`.
4. `server/` imports neither `bot`, `cli` nor `client`.
5. Query understanding (`index/understanding/`) imports no ML runtime (`torch`,
   `sentence_transformers`, `chromadb`, `onnxruntime`), neither directly nor through the
   `index` modules it imports.
6. Under `index/`, only the Chroma adapter (`index/search/store.py`) and the composition root
   (`index/wiring.py`) import `chromadb` or `index.search.store`: the rest of the core, the
   visual collection too, knows the vector store by its port (`index.ports.VectorStore`).

7. Inside the core, sub-packages import one way (`index/…/` may import the kernel — `errors`,
   `error_words`, `models`, `ports`, `llm` — and only the sub-packages listed):
   - `understanding/`: none;
   - `search/`: `understanding/`;
   - `ranking/`: `search/`, `understanding/`;
   - `library/`: `search/` (opening SQLite files in WAL mode);
   - `describers/`: `library/` (the one image decoder), `understanding/` (place names);
   - `visual/`: `library/`, `describers/` (the EfficientNet features);
   - `indexing/`: `library/`, `search/`, `understanding/`, `visual/`, `describers/` (the run
     that drives every wing writes both stores).
   The table is acyclic: no sub-package reaches itself through the ones it may import, so the
   layers can be drawn with every arrow pointing down. The kernel imports no sub-package. Only the facade (`index/service.py`, its `index/records.py`)
   and the composition root (`index/wiring.py`) see everything.
8. `client/` (the one client of the server's API, used by `bot/` and `cli/`) imports no edge
   (`bot`, `server`, `cli`) and no edge framework (`httpx` is its one outside library).
9. The chat core (`bot/` but its messenger adapters and `bot/main.py`, which chooses one)
   imports no messenger: neither an adapter (`bot.wechat`, `bot.wx_*`) nor its client library
   (`wechaty`, `wechaty_puppet`, `wechaty_puppet_service`, `grpclib`).

Every import counts, including ones inside functions and under `TYPE_CHECKING`: a rule is
about which way the code depends, not only about what loads at start-up.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

OUR_PACKAGES = frozenset({"config", "index", "client", "bot", "server", "cli"})
ML_RUNTIMES = frozenset({"torch", "sentence_transformers", "chromadb", "onnxruntime"})
STORE_ADAPTERS = frozenset({"index/search/store.py", "index/wiring.py"})
CHAT_ADAPTERS = frozenset({"bot/wechat.py", "bot/wx_compat.py", "bot/wx_media.py", "bot/main.py"})
MESSENGER_LIBRARIES = frozenset({"wechaty", "wechaty_puppet", "wechaty_puppet_service", "grpclib"})


KERNEL = ("errors", "error_words", "models", "ports", "llm", "prebuilt")
SUB_PACKAGES: dict[str, frozenset[str]] = {  # rule 7: what each sub-package may import
    "understanding": frozenset(),
    "search": frozenset({"understanding"}),
    "ranking": frozenset({"search", "understanding"}),
    "library": frozenset({"search"}),
    "describers": frozenset({"library", "understanding"}),
    "visual": frozenset({"library", "describers"}),
    "indexing": frozenset({"library", "search", "understanding", "visual", "describers"}),
}


@dataclass(frozen=True)
class Rule:
    name: str
    package: str
    forbidden: frozenset[str]


RULES = (
    Rule("1: config/ imports nothing of ours", "config", OUR_PACKAGES - {"config"}),
    Rule(
        "2: index/ imports no edge and no edge framework",
        "index",
        frozenset({"bot", "server", "cli", "client", "wechaty", "fastapi", "starlette", "uvicorn"}),
    ),
    Rule("3: bot/ imports neither server nor cli", "bot", frozenset({"server", "cli"})),
    Rule(
        "4: server/ imports neither bot, cli nor client",
        "server",
        frozenset({"bot", "cli", "client"}),
    ),
    Rule(
        "8: client/ imports no edge and no edge framework",
        "client",
        frozenset({"bot", "server", "cli", "wechaty", "fastapi", "starlette", "uvicorn"}),
    ),
)


@dataclass(frozen=True)
class Import:
    file: str
    line: int
    module: str

    @property
    def top(self) -> str:
        return self.module.split(".")[0]


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve_relative(path: Path, root: Path, node: ast.ImportFrom) -> str:
    package = _module_name(path, root).split(".")
    if path.name != "__init__.py":
        package.pop()
    base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
    return ".".join([*base, node.module] if node.module else base)


def imports_of(path: Path, root: Path = ROOT) -> list[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    rel = path.relative_to(root).as_posix()
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(rel, node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = _resolve_relative(path, root, node) if node.level else (node.module or "")
            found.append(Import(rel, node.lineno, module))
            # `from index import app` names the submodule `index.app`
            found += [Import(rel, node.lineno, f"{module}.{a.name}") for a in node.names]
    return found


def _package_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _describe(imp: Import, rule: str) -> str:
    return f"{imp.file}:{imp.line} imports `{imp.module}`, breaking rule {rule}"


def _first_per_line(found: list[Import]) -> list[Import]:
    """One entry per (line, top-level package), so `from x import y` is reported once."""
    kept: dict[tuple[int, str], Import] = {}
    for imp in found:
        kept.setdefault((imp.line, imp.top), imp)
    return list(kept.values())


def package_violations(rule: Rule) -> list[str]:
    return [
        _describe(imp, rule.name)
        for path in _package_files(rule.package)
        for imp in _first_per_line(imports_of(path))
        if imp.top in rule.forbidden
    ]


def _file_of(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def understanding_violations() -> list[str]:
    """Rule 5, followed through the `index` modules each understanding module imports."""
    rule = "5: query understanding imports no ML runtime"
    problems: set[str] = set()
    for start in sorted(str(p.relative_to(ROOT)) for p in _package_files("index/understanding")):
        seen: set[Path] = set()
        todo = [ROOT / start]
        while todo:
            path = todo.pop()
            if path in seen:
                continue
            seen.add(path)
            for imp in _first_per_line(imports_of(path)):
                if imp.top in ML_RUNTIMES:
                    via = "" if imp.file == start else f" (imported by {start})"
                    problems.add(_describe(imp, rule) + via)
                elif imp.top == "index" and (target := _file_of(imp.module)) is not None:
                    todo.append(target)
    return sorted(problems)


def store_violations(root: Path = ROOT) -> list[str]:
    """Rule 6: the Chroma adapter and its client stay behind the port."""
    rule = (
        "6: only the Chroma adapters and the composition root import chromadb or index.search.store"
    )
    return [
        _describe(imp, rule)
        for path in sorted((root / "index").rglob("*.py"))
        if path.relative_to(root).as_posix() not in STORE_ADAPTERS
        for imp in _first_per_line(imports_of(path, root))
        if imp.top == "chromadb"
        or imp.module == "index.search.store"
        or imp.module.startswith("index.search.store.")
    ]


def chat_core_violations(root: Path = ROOT) -> list[str]:
    """Rule 9: the chat core knows no messenger; its adapters and `bot/main.py` do."""
    rule = "9: the chat core imports no messenger adapter or client library"
    return [
        _describe(imp, rule)
        for path in sorted((root / "bot").rglob("*.py"))
        if path.relative_to(root).as_posix() not in CHAT_ADAPTERS
        for imp in _first_per_line(imports_of(path, root))
        if imp.top in MESSENGER_LIBRARIES
        or imp.module in {"bot.wechat", "bot.wx_compat", "bot.wx_media"}
    ]


def _sub_package(module: str) -> str | None:
    """`index.search.store` -> "search"; None for the kernel and for what is not ours."""
    parts = module.split(".")
    if parts[0] != "index" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in SUB_PACKAGES else None


def sub_package_violations() -> list[str]:
    """Rule 7: each sub-package imports only the kernel and the sub-packages it may."""
    problems = []
    for package, allowed in SUB_PACKAGES.items():
        for path in _package_files(f"index/{package}"):
            for imp in _first_per_line(imports_of(path)):
                target = _sub_package(imp.module)
                if target is not None and target != package and target not in allowed:
                    problems.append(_describe(imp, f"7: index/{package}/ imports no {target}/"))
    for name in KERNEL:
        for imp in imports_of(ROOT / "index" / f"{name}.py"):
            if (target := _sub_package(imp.module)) is not None:
                problems.append(_describe(imp, f"7: the kernel imports no {target}/"))
    return sorted(set(problems))


def allowance_cycles(allowed: dict[str, frozenset[str]]) -> list[list[str]]:
    """Every way back in an allowance table: each cycle once, from its first name in the table
    (`a -> b -> a` as `["a", "b", "a"]`). Rule 7 is only one-way if this finds none."""
    cycles: list[list[str]] = []
    order = list(allowed)
    for start in order:
        todo: list[list[str]] = [[start]]
        while todo:
            path = todo.pop()
            for step in sorted(allowed.get(path[-1], frozenset())):
                if step == start:
                    cycles.append([*path, start])
                elif step not in path and order.index(step) > order.index(start):
                    todo.append([*path, step])
    return cycles


def _report(problems: list[str]) -> str:
    return "import rules broken (see tests/test_import_rules.py):\n  " + "\n  ".join(problems)


def test_packages_import_one_way() -> None:
    problems = [problem for rule in RULES for problem in package_violations(rule)]
    assert not problems, _report(problems)


def test_query_understanding_imports_no_ml_runtime() -> None:
    problems = understanding_violations()
    assert not problems, _report(problems)


def test_the_core_knows_the_vector_store_by_its_port() -> None:
    problems = store_violations()
    assert not problems, _report(problems)


def test_the_store_rule_fails_when_the_core_imports_the_adapter(tmp_path: Path) -> None:
    for package in ("search", "indexing"):
        (tmp_path / "index" / package).mkdir(parents=True)
    (tmp_path / "index" / "search" / "store_memory.py").write_text(
        "import numpy\n", encoding="utf-8"
    )
    (tmp_path / "index" / "indexing" / "indexer.py").write_text(
        "from index.search.store import ChromaStore\nfrom index.search.store_memory import MemoryStore\n",
        encoding="utf-8",
    )
    problems = store_violations(tmp_path)
    assert len(problems) == 1 and problems[0].startswith(
        "index/indexing/indexer.py:1 imports `index.search.store`"
    )


def test_the_chat_core_knows_no_messenger() -> None:
    problems = chat_core_violations()
    assert not problems, _report(problems)


def test_the_chat_core_rule_fails_when_the_handler_imports_an_adapter(tmp_path: Path) -> None:
    (tmp_path / "bot").mkdir()
    (tmp_path / "bot" / "handler.py").write_text("from bot.wechat import PLATFORM\n", "utf-8")
    (tmp_path / "bot" / "access.py").write_text("from wechaty import Contact\n", "utf-8")
    (tmp_path / "bot" / "wechat.py").write_text("from wechaty import Wechaty\n", "utf-8")
    assert [problem.split(" imports ")[0] for problem in chat_core_violations(tmp_path)] == [
        "bot/access.py:1",
        "bot/handler.py:1",
    ]


def test_core_sub_packages_import_one_way() -> None:
    problems = sub_package_violations()
    assert not problems, _report(problems)


def test_the_sub_package_allowances_are_acyclic() -> None:
    cycles = allowance_cycles(SUB_PACKAGES)
    assert not cycles, _report([" -> ".join(cycle) for cycle in cycles])


def test_the_acyclic_check_finds_a_way_back() -> None:
    """The table before `indexing/` left `library/`: library -> visual -> describers -> library."""
    before = {
        "understanding": frozenset(),
        "search": frozenset({"understanding"}),
        "describers": frozenset({"library", "understanding"}),
        "visual": frozenset({"library", "describers"}),
        "library": frozenset({"search", "understanding", "visual"}),
    }
    assert allowance_cycles(before) == [
        ["describers", "library", "visual", "describers"],
        ["visual", "library", "visual"],
    ]
    assert allowance_cycles({"a": frozenset({"a"})}) == [["a", "a"]]


def test_every_core_module_is_in_a_sub_package_or_the_kernel() -> None:
    """A new module goes into the sub-package it belongs to (docs/development.md, Where things live)."""
    top = {p.stem for p in (ROOT / "index").glob("*.py")} - {"__init__"}
    assert top <= {*KERNEL, "service", "records", "wiring", "doctor"}, sorted(top)


def test_the_checker_sees_imports_everywhere(tmp_path: Path) -> None:
    """The AST walk finds imports in functions, relative ones and `from x import y` forms."""
    (tmp_path / "index").mkdir()
    source = tmp_path / "index" / "probe.py"
    source.write_text(
        "def f():\n    import fastapi.routing\nfrom . import models\nfrom bot import handler\n",
        encoding="utf-8",
    )
    modules = {imp.module for imp in imports_of(source, root=tmp_path)}
    assert {"fastapi.routing", "index", "index.models", "bot", "bot.handler"} <= modules


def test_peitu_help_loads_no_vector_store_and_no_model() -> None:
    """`peitu --help` answers without chromadb, torch or sentence-transformers (seen by
    `-X importtime` in a real subprocess, not by timing it)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "cli.main", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "recommend" in proc.stdout
    imported = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }
    heavy = sorted(imported & ML_RUNTIMES)
    assert not heavy, f"peitu --help imported {heavy}"
