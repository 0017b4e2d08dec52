"""What the suite runs with, made once and cached: Celery's sdist (never committed) and a venv of its own.

The venv holds the real Celery and the pytest plugins Celery's integration suite uses, so the project's
locked dependencies stay as they are. celeriac is not installed in it (its pytest plugin would load in
Celery's pytest run): the celeriac worker gets celeriac's ``src`` folder on its ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

__all__ = ["CELERY_VERSION", "REQUIREMENTS", "extract_sdist", "make_venv"]

CELERY_VERSION = "5.7.0"

# The client side (Celery and the plugins its suite marks tests with) and what celeriac's worker
# imports (SQLAlchemy is celeriac's one dependency; pydantic is imported by Celery's tasks.py).
REQUIREMENTS = [
    f"celery[redis,pydantic]=={CELERY_VERSION}",
    "pytest==9.1.1",
    "pytest-timeout==2.4.0",
    "pytest-rerunfailures==16.7",
    "sqlalchemy>=2.0",
]


def _uv() -> list[str]:
    found = shutil.which("uv") or shutil.which("uv", path=str(Path.home() / ".local" / "bin"))
    return [found] if found else [sys.executable, "-m", "uv"]


def make_venv(cache: Path) -> Path:
    """The suite's venv under ``cache`` (made and filled on first use, or when ``REQUIREMENTS``
    change), returned as the path of its ``python``."""
    venv = cache / "venv"
    python = venv / "bin" / "python"
    stamp = venv / "celery-suite-requirements.txt"
    wanted = "\n".join(REQUIREMENTS) + "\n"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    subprocess.run([*_uv(), "venv", "--quiet", "--seed", "--python", "3.11", str(venv)], check=True)
    env = {**os.environ, "VIRTUAL_ENV": str(venv)}
    subprocess.run([*_uv(), "pip", "install", "--quiet", *REQUIREMENTS], check=True, env=env)
    stamp.write_text(wanted)
    return python


def extract_sdist(cache: Path, python: Path) -> Path:
    """Celery's source distribution, downloaded with pip into ``cache`` and extracted there once.

    Returns:
        The extracted folder (it holds ``t/integration``).
    """
    folder = cache / f"celery-{CELERY_VERSION}"
    if (folder / "t" / "integration" / "tasks.py").exists():
        return folder
    archive = cache / f"celery-{CELERY_VERSION}.tar.gz"
    if not archive.exists():
        wanted = [f"celery=={CELERY_VERSION}", "--no-binary", ":all:", "--no-deps"]
        subprocess.run([str(python), "-m", "pip", "download", "-q", *wanted, "-d", str(cache)], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(cache, filter="data")
    return folder
