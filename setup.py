"""Build an egg for Scrapyd: ``scrapyd-deploy`` runs ``python setup.py bdist_egg``.

Why this file exists: the project itself is built by hatchling (pyproject.toml), but scrapyd-deploy
needs a setup.py, and without this one it writes its own, whose ``find_packages()`` would also pack
tests/ and benchmarks/ and miss the bundled gallery profiles. The name and the ``scrapy`` settings
entry point come from pyproject.toml; the version, as for hatchling, from ``imagecrawl/__init__.py``.
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

_INIT = (Path(__file__).resolve().parent / "imagecrawl" / "__init__.py").read_text(encoding="utf-8")
_VERSION = re.search(r'^__version__ = "([^"]+)"', _INIT, re.MULTILINE)

setup(
    version=_VERSION.group(1) if _VERSION else "0",
    packages=find_packages(include=["imagecrawl", "imagecrawl.*", "spiders", "spiders.*"]),
    package_data={"imagecrawl": ["profiles/*.toml", "py.typed"]},
    zip_safe=True,
)
