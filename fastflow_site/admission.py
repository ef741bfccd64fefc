"""Who may come in, decided from the e-mail addresses a sign-in proved (verified ones only):

1. INITIAL_ADMIN_EMAIL joins as admin;
2. a pending invitation for one of the addresses joins with its role (single use);
3. an address in ALLOWED_EMAIL_DOMAINS joins as viewer;
4. anyone else is refused, and may ask to join when JOIN_REQUESTS is on.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from fastflow_site.models import Invitation
from fastflow_site.roles import Role


@dataclass(frozen=True)
class Admission:
    role: str
    reason: str
    invitation: Invitation | None = None


def domain_of(email: str) -> str:
    return email.rpartition("@")[2].lower()


def admit(verified_emails: list[str]) -> Admission | None:
    emails = sorted({email.strip().lower() for email in verified_emails if email})
    initial = settings.INITIAL_ADMIN_EMAIL.strip().lower()
    if initial and initial in emails:
        return Admission(Role.ADMIN, "INITIAL_ADMIN_EMAIL")
    invitation = Invitation.objects.pending().for_emails(emails).order_by("-created_at").first()
    if invitation is not None:
        return Admission(invitation.role, "invitation", invitation)
    allowed = {domain.lower().lstrip("@") for domain in settings.ALLOWED_EMAIL_DOMAINS}
    if any(domain_of(email) in allowed for email in emails):
        return Admission(Role.VIEWER, "ALLOWED_EMAIL_DOMAINS")
    return None
