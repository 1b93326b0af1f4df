"""pyftpdlib's authorizer interface, answered by a session's view.

censusdrop checks passwords itself (off the event loop, see the handler);
pyftpdlib still asks an authorizer for permissions, so each session gets
one bound to its account view, and sessions before login get one that
refuses everything.
"""

from __future__ import annotations

from censusdrop.server.filesystem import WRITE_PERMS
from censusdrop.server.filesystem import AccountView
from censusdrop.server.filesystem import WindowClosed


class SessionAuthorizer:
    """pyftpdlib's authorizer interface, answered by one session's view."""

    def __init__(self, view: AccountView) -> None:
        self.view = view

    def has_perm(self, username: str, perm: str, path: str | None = None) -> bool:
        if self.view.has_perm(perm, path or "/"):
            return True
        # A write refused only for want of an open window: say why, and
        # until or since when, rather than pyftpdlib's bare 550.
        refusal = self.view.write_refusal() if perm in WRITE_PERMS else None
        if refusal is not None:
            raise WindowClosed(refusal)
        return False

    def get_perms(self, username: str) -> str:
        return self.view.perms()

    def get_msg_quit(self, username: str) -> str:
        return "再见。"

    def impersonate_user(self, username: str, password: str) -> None:
        """Sessions run as the server's own user."""

    def terminate_impersonation(self, username: str) -> None:
        """Sessions run as the server's own user."""


class _NoLogin:
    """Authorizer before login: every permission is refused."""

    def has_perm(self, username: str, perm: str, path: str | None = None) -> bool:
        return False

    def get_perms(self, username: str) -> str:
        return ""

    def get_msg_quit(self, username: str) -> str:
        return "再见。"

    def impersonate_user(self, username: str, password: str) -> None:
        """Nothing to impersonate."""

    def terminate_impersonation(self, username: str) -> None:
        """Nothing to impersonate."""
