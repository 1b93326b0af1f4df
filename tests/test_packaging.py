"""Every package of the source tree is installed by a plain ``pip install .``.

The tests run against an editable install, which finds any folder; a
wheel holds only the packages ``pyproject.toml`` names. One left out there
makes the installed command fail at import (the quick start's demo).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOP = {"server": "censusdrop.server", "audit": "censusdrop.audit",
       "cli": "censusdrop.cli", "config": "censusdrop.config"}  # fmt: skip


def _source_packages() -> dict[str, str]:
    """Package name -> its folder, for every folder with an __init__.py."""
    found = {}
    for folder, name in TOP.items():
        for init in sorted((ROOT / folder).rglob("__init__.py")):
            relative = init.parent.relative_to(ROOT)
            parts = relative.parts[1:]
            found[".".join((name, *parts))] = relative.as_posix()
    return found


def test_every_source_package_is_listed_for_the_wheel() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"][
        "setuptools"
    ]
    expected = _source_packages()
    assert sorted(setuptools["packages"]) == sorted(expected)
    assert setuptools["package-dir"] == expected
