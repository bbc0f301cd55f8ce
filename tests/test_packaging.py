"""The wheel holds every package: pyproject.toml lists them by hand (the folders install under toolrelay.*)."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"app": "toolrelay.app", "agent": "toolrelay.agent", "tools": "toolrelay.tools", "memory": "toolrelay.memory"}


def test_every_package_folder_is_listed() -> None:
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    for folder, package in FOLDERS.items():
        for init in (REPO / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(REPO / folder).parts
            found.add(".".join((package, *parts)))
    assert sorted(found - listed) == [], "add these to [tool.setuptools] packages in pyproject.toml"
    assert sorted(listed - found) == [], "listed in pyproject.toml but not a package folder"
