"""django-allauth adapters: nobody signs up uninvited, only verified addresses count, and
sign-in providers' client secrets set in the admin are stored encrypted."""

from __future__ import annotations

from allauth.account.adapter import DefaultAccountAdapter
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from django.db import transaction
from django.http import HttpRequest

from fastflow_site.admission import admit
from fastflow_site.audit import Action, record
from fastflow_site.models import SignInProvider
from fastflow_site.roles import set_role

# What a refused sign-in proved, kept in the session for a join request.
REFUSED_SESSION_KEY = "fastflow_refused_sign_in"


class AccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request: HttpRequest) -> bool:
        # Password accounts are made from an invitation link (fastflow_site.views), never
        # by a sign-up form anyone could reach.
        return False


def verified_emails(sociallogin) -> list[str]:
    return [address.email for address in sociallogin.email_addresses if address.verified]


class SocialAccountAdapter(DefaultSocialAccountAdapter):
    def is_open_for_signup(self, request: HttpRequest, sociallogin) -> bool:
        emails = verified_emails(sociallogin)
        if admit(emails) is not None:
            request.session.pop(REFUSED_SESSION_KEY, None)
            return True
        provider = sociallogin.account.provider
        request.session[REFUSED_SESSION_KEY] = {
            "email": emails[0] if emails else "",
            "name": _full_name(sociallogin),
            "provider": provider,
        }
        unverified = [a.email for a in sociallogin.email_addresses if not a.verified]
        record(
            Action.SIGN_IN_REFUSED,
            request=request,
            provider=provider,
            verified=emails or None,
            unverified=unverified or None,
        )
        return False

    @transaction.atomic
    def save_user(self, request: HttpRequest, sociallogin, form=None):
        user = super().save_user(request, sociallogin, form)
        admission = admit(verified_emails(sociallogin))
        if admission is None:  # an invitation used up meanwhile: the person gets no role
            return user
        set_role(user, admission.role)
        if admission.invitation is not None and admission.invitation.accept(user):
            record(Action.INVITATION_ACCEPTED, admission.invitation, actor=user, request=request)
        record(
            Action.PERSON_JOINED,
            user,
            actor=user,
            request=request,
            role=admission.role,
            reason=admission.reason,
            provider=sociallogin.account.provider,
        )
        return user

    def list_apps(self, request, provider=None, client_id=None):
        """Apps from settings, and the providers set up in the admin (SignInProvider)."""
        apps = super().list_apps(request, provider=provider, client_id=client_id)
        for row in SignInProvider.objects.filter(enabled=True):
            app = row.as_social_app()
            if provider not in (None, app.provider, app.provider_id):
                continue
            if client_id is None or client_id == app.client_id:
                apps.append(app)
        return apps


def _full_name(sociallogin) -> str:
    user = sociallogin.user
    return f"{user.first_name} {user.last_name}".strip() or user.get_username() or ""
