"""The ``[sandbox]`` section, as the sandbox modules import it.

Declared with the rest of the settings tree in :mod:`toolrelay.app.settings`,
where the loader checks it; building one in code checks it the same way.
"""

from __future__ import annotations

from toolrelay.app.settings import CgroupMode, SandboxBackend, SandboxSettings

__all__ = ["CgroupMode", "SandboxBackend", "SandboxSettings"]
