"""The layout's rules, checked by parsing the code (docs/architecture.md#layout): each feature has one folder
with its pure core and its Scrapy adapters, the adapters live in modules named after their Scrapy role, the
core does not depend on the optional parts, crawl-wide state has one home, one copy of each helper."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "imagecrawl"
#: folders with no Scrapy adapter at all: parsing, hashing, state machines
PURE = ("metadata", "pages")
#: the Scrapy roles, named as in Scrapy's own tree and project template: inside a feature folder, the
#: adapters live in a module (or a package of modules) of one of these names
ROLES = (
    "addon",
    "commands",
    "downloadermiddlewares",
    "extensions",
    "middlewares",
    "pipelines",
    "resolver",
    "scheduler",
    "spidermiddlewares",
    "spiders",
)
#: the few modules that talk to Scrapy without being one of its components, each with its reason
SHELLS = {
    "storage/context.py": "the crawl context: the state of one crawl, keyed by its Crawler",
    "forget/crawl.py": "the crawl's side of forgetting: the tombstones and stats of one crawler",
    "forget/cli.py": "the forget command: reads the project's Scrapy settings",
    "forget/recheck.py": "the recheck command and the crawl it runs",
    # not a Scrapy component: the scheduler creates it and it hooks into the crawl's signals and scraper
    "distributed/worker.py": "a worker's side of the shared frontier: leases, liveness, when to stop",
    # the forget feature's TombstoneIndex plug point (IMAGECRAWL_TOMBSTONES_FACTORY), not a Scrapy role
    "distributed/tombstones.py": "the shared tombstones, built from the crawler's store",
}
#: the optional parts the core must not import
OPTIONAL = ("imagecrawl.distributed", "imagecrawl.browser", "scrapy_redis", "scrapy_playwright", "redis")
#: the modules of the optional parts
OPTIONAL_HOMES = ("distributed",)


def modules(root: Path = PACKAGE) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def imports(path: Path) -> set[str]:
    """Every module imported anywhere in ``path`` (top level and inside functions)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def test_the_core_imports_nothing_optional() -> None:
    offenders: dict[str, list[str]] = {}
    for path in modules():
        parts = path.relative_to(PACKAGE).parts
        if parts[0] in OPTIONAL_HOMES or path.name == "browser.py":
            continue
        bad = sorted(m for m in imports(path) if m.startswith(OPTIONAL))
        if bad:
            offenders[rel(path)] = bad
    assert offenders == {}


def test_the_sandbox_is_not_in_the_runtime() -> None:
    """The sandbox (the test and demo site) lives in tests/sandbox; only the demo command starts it, and
    nothing in the package needs aiohttp, which is the sandbox's extra."""
    assert not (PACKAGE / "sandbox").exists()
    offenders = {
        rel(p): sorted(m for m in imports(p) if m.split(".")[0] in ("tests", "aiohttp"))
        for p in [*modules(), *modules(REPO / "spiders")]
        if p != PACKAGE / "demo.py"
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def features() -> list[Path]:
    """Every feature folder: each package of imagecrawl that is not itself a Scrapy role (``commands``)."""
    return sorted(p for p in PACKAGE.iterdir() if (p / "__init__.py").is_file() and p.name not in ROLES)


def is_role(path: Path) -> bool:
    """A Scrapy adapter's module: ``<feature>/<role>.py`` or ``<feature>/<role>/...``."""
    return path.relative_to(PACKAGE).parts[1].removesuffix(".py") in ROLES


def role_module(name: str) -> bool:
    """``name`` (an import) is a role module of the package: ``imagecrawl[.<feature>].<role>[...]``."""
    parts = name.split(".")
    return parts[0] == "imagecrawl" and any(part in ROLES for part in parts[1:3])


def test_every_feature_has_one_folder() -> None:
    """No folder of one Scrapy role across features (the layout before features had their own)."""
    assert [p.name for p in features()] != []
    assert sorted(p.name for p in PACKAGE.iterdir() if p.name in ROLES and any(p.glob("*.py"))) == ["commands"]
    for name in ("pacing", "optout", "dedupe", "storage", "report", "guard", "jobdir"):
        assert PACKAGE / name in features()


@pytest.mark.parametrize("feature", [p.name for p in features()])
def test_a_feature_core_does_not_import_scrapy_or_its_adapters(feature: str) -> None:
    """Inside a feature folder, every module but the role modules (and the shells named in SHELLS) imports
    no Scrapy, no Twisted and no role module of any feature: the adapters depend on the core, never back."""
    offenders: dict[str, list[str]] = {}
    for path in modules(PACKAGE / feature):
        if is_role(path) or str(path.relative_to(PACKAGE)) in SHELLS:
            continue
        bad = sorted(m for m in imports(path) if m.split(".")[0] in ("scrapy", "twisted") or role_module(m))
        if bad:
            offenders[rel(path)] = bad
    assert offenders == {}


def test_the_shells_exist_and_need_their_exception() -> None:
    """Every entry of SHELLS names a module that would break the rule without it (no stale exception)."""
    for name in SHELLS:
        path = PACKAGE / name
        assert path.is_file(), name
        assert any(m.split(".")[0] in ("scrapy", "twisted") or role_module(m) for m in imports(path)), name


@pytest.mark.parametrize("package", PURE)
def test_pure_cores_do_not_import_scrapy(package: str) -> None:
    offenders = {
        rel(p): sorted(m for m in imports(p) if m.split(".")[0] in ("scrapy", "twisted"))
        for p in modules(PACKAGE / package)
    }
    assert {k: v for k, v in offenders.items() if v} == {}


#: the role module a component of each component setting lives in
ROLE_OF = {
    "DOWNLOADER_MIDDLEWARES": "downloadermiddlewares",
    "SPIDER_MIDDLEWARES": "spidermiddlewares",
    "ITEM_PIPELINES": "pipelines",
    "EXTENSIONS": "extensions",
    "SCHEDULER": "scheduler",
    "TWISTED_DNS_RESOLVER": "resolver",
}


def test_every_component_lives_in_its_role_module() -> None:
    """Each component the add-on installs is found at ``imagecrawl[.<feature>].<role>[.<module>].<Class>``
    under the role of the setting that names it."""
    from imagecrawl import defaults

    named: list[tuple[str, str]] = []
    for setting in ROLE_OF:
        value = getattr(defaults, setting)
        named += [(setting, value)] if isinstance(value, str) else [(setting, p) for p in value]
    wrong = [
        f"{setting}: {path}"
        for setting, path in named
        if path.startswith("imagecrawl.") and ROLE_OF[setting] not in path.split(".")[1:3]
    ]
    assert len(named) > 20
    assert wrong == []


def test_crawl_wide_state_has_one_home() -> None:
    """Per-crawler state lives in imagecrawl/storage/context.py: no other registry, no crawler attributes."""
    offenders: list[str] = []
    for path in [*modules(), *modules(REPO / "spiders")]:
        if path == PACKAGE / "storage" / "context.py":
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "WeakKeyDictionary":
                offenders.append(f"{rel(path)}:{node.lineno} WeakKeyDictionary")
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Store)
                and isinstance(node.value, ast.Name)
                and node.value.id == "crawler"
                and node.attr.startswith(("imagecrawl", "_imagecrawl"))
            ):
                offenders.append(f"{rel(path)}:{node.lineno} crawler.{node.attr}")
    assert offenders == []


#: helpers that once existed in several shapes; each must be defined once
ONCE = (
    "parse_retry_after",
    "site_of_url",
    "site_of_host",
    "classify_status",
    "classify_exception",
    "TIMEOUT_EXCEPTIONS",
    "CONNECTION_EXCEPTIONS",
    "SiteState",
    "UA_TOKEN",
    "RobotsMiddleware",
    "retry_later",
    "crawl_context",
    "Entry",
    "set_exit_code",
)


def test_one_definition_of_each_shared_helper() -> None:
    where: dict[str, list[str]] = defaultdict(list)
    for path in [*modules(), *modules(REPO / "spiders")]:
        for node in ast.parse(path.read_text(), str(path)).body:
            names: list[str] = []
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names = [node.target.id]
            for name in names:
                if name in ONCE:
                    where[name].append(rel(path))
    assert {k: v for k, v in where.items() if len(v) != 1} == {}
    assert set(where) == set(ONCE)


def test_every_downloader_middleware_has_its_own_module() -> None:
    """One component a module: a downloadermiddlewares module (a feature's, or one of a feature's
    downloadermiddlewares package) defines at most one middleware, except imagecrawl/downloadermiddlewares.py,
    whose three small middlewares share one job (turning download errors into counts)."""
    many: dict[str, list[str]] = {}
    found = [p for p in modules() if "downloadermiddlewares" in (p.stem, p.parent.name)]
    assert len(found) > 5
    for path in found:
        tree = ast.parse(path.read_text(), str(path))
        classes = [
            n.name
            for n in tree.body
            if isinstance(n, ast.ClassDef)
            and any(
                isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
                and f.name in ("process_request", "process_response", "process_exception")
                for f in n.body
            )
        ]
        if len(classes) > 1 and path != PACKAGE / "downloadermiddlewares.py":
            many[rel(path)] = classes
    assert many == {}


def test_benchmarks_are_a_package_the_tests_do_not_import() -> None:
    """benchmarks/ is run as ``python -m benchmarks.<name>``: no sys.path edits; tests never import it."""
    assert (REPO / "benchmarks" / "__init__.py").is_file()
    edits = [
        rel(p)
        for p in modules(REPO / "benchmarks")
        # benchmarks/out/ is the (git-ignored) output folder: its venvs hold other people's scripts
        if p.relative_to(REPO / "benchmarks").parts[0] != "out"
        and any(
            isinstance(node, ast.Attribute) and ast.unparse(node) == "sys.path"
            for node in ast.walk(ast.parse(p.read_text(), str(p)))
        )
    ]
    assert edits == []
    importers = {
        rel(p): sorted(m for m in imports(p) if m.split(".")[0] == "benchmarks") for p in modules(REPO / "tests")
    }
    assert {k: v for k, v in importers.items() if v} == {}


def test_the_dedupe_package_has_no_import_cycle() -> None:
    """sqlite.py -> worker.py -> sql.py, one way (docs/architecture.md): no module of imagecrawl/dedupe
    reaches itself through its imports (top level or inside functions, TYPE_CHECKING included)."""
    package = PACKAGE / "dedupe"
    graph = {
        f"imagecrawl.dedupe.{p.stem}": {
            m for m in imports(p) if m.startswith("imagecrawl.dedupe.") and m.count(".") == 2
        }
        for p in modules(package)
        if p.stem != "__init__"
    }

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, set()):
            if nxt == target or (nxt not in seen and reaches(nxt, target, seen | {nxt})):
                return True
        return False

    assert sorted(m for m in graph if reaches(m, m, {m})) == []


#: what a config field may default to without naming where the value lives: nothing at all
NEUTRAL = (None, "", (), frozenset())


def literal(node: ast.expr) -> bool:
    """``node`` is a value written out (``2.0``, ``"x"``, ``frozenset({429, 500})``), not a name of one."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call):
            continue
        if isinstance(sub, ast.Name | ast.Attribute) and not any(
            isinstance(call, ast.Call) and call.func is sub for call in ast.walk(node)
        ):
            return False
    return True


def neutral(node: ast.expr) -> bool:
    """``None``, ``""``, ``()``, ``frozenset()``: no value to restate."""
    if isinstance(node, ast.Call):
        return isinstance(node.func, ast.Name) and node.func.id in ("frozenset", "tuple") and not node.args
    try:
        return ast.literal_eval(node) in NEUTRAL
    except ValueError:
        return False


def test_no_config_restates_a_default() -> None:
    """Defaults live in the add-on's settings (imagecrawl/defaults.py) and the tuning (imagecrawl/tuning.py),
    or, for a value that is neither, in one named constant beside the config: a config dataclass's field
    default names one of them (``DEFAULTS.pacing_jitter``, ``defaults.IMAGECRAWL_MAX_RATE_PER_SITE``,
    ``RECOVER_RATIO``), never writes a value out, so no default is written twice (docs/settings.md)."""
    configs = 0
    restated: list[str] = []
    for path in [p for p in modules() if p != PACKAGE / "tuning.py"]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.ClassDef) and node.name.endswith(("Config", "Gate"))):
                continue
            configs += 1
            for field in node.body:
                if not (isinstance(field, ast.AnnAssign) and field.value is not None):
                    continue
                if literal(field.value) and not neutral(field.value):
                    restated.append(f"{rel(path)}:{field.lineno} {node.name}.{ast.unparse(field.target)}")
    assert configs > 10
    assert restated == []
