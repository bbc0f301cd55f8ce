"""Sandboxed execution of untrusted Python code (docs/tools.md: the backends and what each guarantees).

Build once at start-up and share::

    sandbox = await select_sandbox(SandboxSettings(...))   # never raises
    result = await sandbox.run("print(1)")                   # SandboxResult
    sandbox.status()                                          # for /ready
    await sandbox.aclose()                                    # at shutdown

``select_sandbox`` returns a working backend (bwrap, else Landlock) that
passed its escape self-test, or a ``DisabledSandbox`` whose runs fail with
"code execution is unavailable on this host: <reason>".
"""

from .base import UNAVAILABLE, DisabledSandbox, Sandbox
from .bwrap import BwrapSandbox
from .landlock import LandlockSandbox, landlock_abi
from .result import LIMITS, SandboxResult
from .selector import select_sandbox, self_test
from .settings import SandboxSettings

__all__ = [
    "LIMITS",
    "UNAVAILABLE",
    "BwrapSandbox",
    "DisabledSandbox",
    "LandlockSandbox",
    "Sandbox",
    "SandboxResult",
    "SandboxSettings",
    "landlock_abi",
    "select_sandbox",
    "self_test",
]
