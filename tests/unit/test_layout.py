"""The package's shape, checked: the public API, what ``import celeriac`` loads, and the technology packages.

Each technology (Redis, AMQP, SQL, memory) is one package; the rest of celeriac meets it only through the
Broker and Backend contracts and the URL registries, so its private modules are its own.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import celeriac

PACKAGE = Path(celeriac.__file__).parent
TECHNOLOGIES = ("redis", "amqp", "sql", "sqs", "memory")


def test_the_public_api_is_exactly_this() -> None:
    assert sorted(celeriac.__all__) == [
        "AsyncResult",
        "Celeriac",
        "Celery",
        "EagerResult",
        "GroupResult",
        "Signature",
        "Task",
        "__version__",
        "chain",
        "chord",
        "chunks",
        "group",
        "maybe_signature",
        "shared_task",
        "signature",
        "states",
        "xmap",
        "xstarmap",
    ]
    assert all(hasattr(celeriac, name) for name in celeriac.__all__)


def test_import_celeriac_loads_no_driver_and_no_technology() -> None:
    script = "import sys, json, celeriac; print(json.dumps(sorted(sys.modules)))"
    loaded = json.loads(
        subprocess.run([sys.executable, "-c", script], check=True, capture_output=True).stdout
    )
    drivers = {
        "redis",
        "aiormq",
        "pamqp",
        "sqlalchemy",
        "psycopg",
        "pymysql",
        "boto3",
        "botocore",
        "aiobotocore",
        "yaml",
        "msgpack",
        "rich",
    }
    assert [name for name in loaded if name.split(".")[0] in drivers] == []
    technologies = {f"celeriac.{tech}" for tech in TECHNOLOGIES}
    assert sorted(name for name in loaded if ".".join(name.split(".")[:2]) in technologies) == []


def _imported_modules(path: Path) -> set[str]:
    """Every celeriac module ``path`` names in an import statement (any level, TYPE_CHECKING included)."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("celeriac.")}


def test_no_module_outside_a_technology_imports_its_private_modules() -> None:
    offences = []
    for path in sorted(PACKAGE.rglob("*.py")):
        owner = path.relative_to(PACKAGE).parts[0]
        for name in _imported_modules(path):
            parts = name.split(".")
            if len(parts) > 2 and parts[1] in TECHNOLOGIES and parts[1] != owner and parts[2].startswith("_"):
                offences.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert offences == []


def test_every_built_in_scheme_points_into_its_technology_package() -> None:
    from celeriac.backends import _BUILTIN as backends
    from celeriac.beat.store import _BUILTIN as schedule_stores
    from celeriac.brokers import _BUILTIN as brokers

    targets = {*brokers.values(), *backends.values(), *schedule_stores.values()}
    outside = [t for t in targets if t.split(".")[1] not in TECHNOLOGIES and "disabled" not in t]
    assert outside == []


def test_unit_test_folders_mirror_the_package() -> None:
    tests = Path(__file__).parent
    folders = {p.relative_to(tests) for p in tests.rglob("*") if p.is_dir() and p.name != "__pycache__"}
    assert [str(f) for f in sorted(folders) if not (PACKAGE / f / "__init__.py").is_file()] == []
