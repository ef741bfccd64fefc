from __future__ import annotations

from fastflow_site.models.audit import AuditEntry
from fastflow_site.models.people import Invitation, JoinRequest
from fastflow_site.models.providers import SignInProvider
from fastflow_site.models.tokens import ApiToken

__all__ = ["ApiToken", "AuditEntry", "Invitation", "JoinRequest", "SignInProvider"]
