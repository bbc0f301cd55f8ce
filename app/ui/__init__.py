"""The web console at ``/ui``: static files shipped in the package, served without authentication.

The pages hold no data: every call they make goes to the public API (``/v1/*`` with the user's
key, ``/admin/*`` with the admin key), authenticated there like any other client's.
"""

from toolrelay.app.ui.pages import UI_POLICY, UI_PREFIX, StaticFiles, build_ui_handlers

__all__ = ["UI_POLICY", "UI_PREFIX", "StaticFiles", "build_ui_handlers"]
