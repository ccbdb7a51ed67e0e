"""Build an egg for Scrapyd (``scrapyd-deploy`` runs ``python setup.py bdist_egg``).

The project itself is built by hatchling (pyproject.toml); this file only exists so that scrapyd-deploy
does not write its own setup.py, whose ``find_packages()`` would also pack tests/ and benchmarks/ and
miss the bundled gallery profiles. Name, version and the ``scrapy`` settings entry point come from
pyproject.toml.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["imagecrawl", "imagecrawl.*", "spiders", "spiders.*"]),
    package_data={"imagecrawl": ["profiles/*.toml", "py.typed"]},
    zip_safe=True,
)
