"""What admins do to people: change a role, deactivate (ending sessions, websockets and
tokens at once), reactivate, invite — each recorded in the audit log."""

from __future__ import annotations

from allauth.account.models import EmailAddress
from allauth.usersessions.models import UserSession
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from fastflow_site.audit import Action, record
from fastflow_site.models import ApiToken, Invitation
from fastflow_site.roles import Role, role_of, set_role


class PeopleError(ValueError):
    """A change that would lock the instance out, said in words."""


def active_admins():
    return (
        get_user_model()
        .objects.filter(is_active=True)
        .filter(Q(is_superuser=True) | Q(groups__name=Role.ADMIN))
        .distinct()
    )


def _keep_an_admin(user) -> None:
    if role_of(user) == Role.ADMIN and not active_admins().exclude(pk=user.pk).exists():
        raise PeopleError(f"{user.get_username()} is the last active admin: make another first.")


@transaction.atomic
def change_role(user, role: str, by=None) -> None:
    before = role_of(user)
    if before == role:
        return
    if role != Role.ADMIN:
        _keep_an_admin(user)
    set_role(user, role)
    record(Action.ROLE_CHANGED, user, actor=by, before=before, after=role)


@transaction.atomic
def deactivate(user, by=None) -> None:
    """No more sign-ins; every session, live websocket and API token of theirs ends now."""
    if by is not None and user.pk == by.pk:
        raise PeopleError("You cannot deactivate yourself.")
    _keep_an_admin(user)
    type(user).objects.filter(pk=user.pk).update(is_active=False)
    user.is_active = False
    ended = end_sessions(user)
    revoked = ApiToken.objects.filter(user=user, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    # Websockets check that their person is still active (runs_app.consumers) and close.
    record(Action.PERSON_DEACTIVATED, user, actor=by, sessions=ended, tokens=revoked)


def end_sessions(user) -> int:
    """Delete every stored session of `user` (the ones allauth tracks and any other)."""
    ended = 0
    for user_session in UserSession.objects.filter(user=user):
        user_session.end()
        ended += 1
    # Sessions from before allauth tracked them: found by the user id they hold.
    for session in Session.objects.filter(expire_date__gt=timezone.now()).iterator():
        if session.get_decoded().get("_auth_user_id") == str(user.pk):
            session.delete()
            ended += 1
    return ended


@transaction.atomic
def reactivate(user, by=None) -> None:
    type(user).objects.filter(pk=user.pk).update(is_active=True)
    user.is_active = True
    record(Action.PERSON_REACTIVATED, user, actor=by)


def invite(email: str, role: str, by=None, days: int | None = None) -> tuple[Invitation, str, bool]:
    """A new invitation, its link (shown once), and whether it was also sent by mail."""
    email = email.strip().lower()
    if role not in Role.values:
        raise PeopleError(f"{role!r} is not a role; use one of {', '.join(Role.values)}")
    if EmailAddress.objects.filter(email__iexact=email, user__is_active=True).exists():
        raise PeopleError(f"{email} already belongs to someone here.")
    invitation, token = Invitation.make(email, role, created_by=by, days=days)
    link = Invitation.link(token)
    mailed = settings.MAIL_CONFIGURED and _send_invitation(invitation, link, by)
    record(Action.INVITATION_CREATED, invitation, actor=by, role=role, mailed=mailed)
    return invitation, link, mailed


def _send_invitation(invitation: Invitation, link: str, by) -> bool:
    inviter = by.get_username() if by is not None else "An admin"
    send_mail(
        "You are invited to Fast-Flow",
        f"{inviter} invited you to Fast-Flow as {invitation.role}.\n\n"
        f"Accept the invitation: {link}\n\n"
        f"Sign in with an account whose verified e-mail address is {invitation.email}. "
        f"The link works once and expires on {invitation.expires_at:%Y-%m-%d %H:%M %Z}.\n",
        None,
        [invitation.email],
    )
    return True


def send_approval(invitation: Invitation) -> bool:
    """Tell someone whose join request was approved that they can sign in now."""
    if not settings.MAIL_CONFIGURED:
        return False
    send_mail(
        "Your access to Fast-Flow was approved",
        f"You can sign in now as {invitation.role}: {settings.BASE_URL}{reverse('account_login')}"
        f"\n\nUse the account with the verified address {invitation.email}.\n",
        None,
        [invitation.email],
    )
    return True


def tell_admins_of_join_request(email: str) -> None:
    if not settings.MAIL_CONFIGURED:
        return
    addresses = [user.email for user in active_admins() if user.email]
    if addresses:
        send_mail(
            "Someone asks to join Fast-Flow",
            f"{email} asks to join. Approve or deny: {settings.BASE_URL}{reverse('people')}\n",
            None,
            addresses,
        )
