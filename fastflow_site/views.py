"""Site pages: people and invitations (admins), the audit log (admins), accepting an
invitation and asking to join (before sign-in), your account and API tokens."""

from __future__ import annotations

from allauth.account.models import EmailAddress
from allauth.socialaccount.models import SocialAccount
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.contrib.auth.decorators import login_not_required, permission_required
from django.db import IntegrityError, transaction
from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from fastflow_site import people
from fastflow_site.accounts import REFUSED_SESSION_KEY
from fastflow_site.audit import Action, record
from fastflow_site.forms import (
    AuditFilterForm,
    InviteForm,
    JoinRequestForm,
    PasswordAccountForm,
    RoleForm,
    TokenForm,
)
from fastflow_site.models import ApiToken, AuditEntry, Invitation, JoinRequest
from fastflow_site.paging import page_of
from fastflow_site.roles import Role, role_of, set_role

MANAGE_PEOPLE = "auth.change_user"
AUDIT_ENTRIES_PER_PAGE = 50


def _no_store(response: HttpResponse) -> HttpResponse:
    """A page showing a link or token once must not be kept by a browser or a proxy."""
    response["Cache-Control"] = "no-store"
    return response


# --- people (admins) -------------------------------------------------------------------------


@permission_required(MANAGE_PEOPLE, raise_exception=True)
def people_list(request: HttpRequest, new_link: str = "", form: InviteForm | None = None):
    users = (
        get_user_model()
        .objects.order_by("-is_active", "username")
        .prefetch_related(
            "groups", Prefetch("socialaccount_set", queryset=SocialAccount.objects.only("provider"))
        )
    )
    context = {
        "people": [(user, role_of(user)) for user in users],
        "roles": Role.choices,
        "invitations": Invitation.objects.select_related("created_by", "accepted_by")[:50],
        "join_requests": JoinRequest.objects.filter(state=JoinRequest.State.WAITING),
        "invite_form": form or InviteForm(),
        "new_link": new_link,
        "mail_configured": settings.MAIL_CONFIGURED,
        "join_requests_on": settings.JOIN_REQUESTS,
    }
    return _no_store(render(request, "fastflow_site/people.html", context))


@require_POST
@permission_required(MANAGE_PEOPLE, raise_exception=True)
def invite(request: HttpRequest) -> HttpResponse:
    form = InviteForm(request.POST)
    if not form.is_valid():
        return people_list(request, form=form)
    try:
        invitation, link, mailed = people.invite(
            form.cleaned_data["email"], form.cleaned_data["role"], by=request.user
        )
    except people.PeopleError as problem:
        form.add_error("email", str(problem))
        return people_list(request, form=form)
    sent = f"sent to {invitation.email} and " if mailed else ""
    messages.success(request, f"Invitation {sent}shown below: copy the link now.")
    return people_list(request, new_link=link)


def _get_person(pk: int):
    return get_object_or_404(get_user_model(), pk=pk)


@require_POST
@permission_required(MANAGE_PEOPLE, raise_exception=True)
def person_role(request: HttpRequest, pk: int) -> HttpResponse:
    person = _get_person(pk)
    form = RoleForm(request.POST)
    if form.is_valid():
        try:
            people.change_role(person, form.cleaned_data["role"], by=request.user)
            messages.success(request, f"{person.get_username()} is {form.cleaned_data['role']}.")
        except people.PeopleError as problem:
            messages.error(request, str(problem))
    return redirect("people")


@require_POST
@permission_required(MANAGE_PEOPLE, raise_exception=True)
def person_active(request: HttpRequest, pk: int) -> HttpResponse:
    person = _get_person(pk)
    try:
        if request.POST.get("active") == "yes":
            people.reactivate(person, by=request.user)
            messages.success(request, f"{person.get_username()} can sign in again.")
        else:
            people.deactivate(person, by=request.user)
            messages.success(
                request,
                f"{person.get_username()} is deactivated: their sessions, live pages and API "
                "tokens ended.",
            )
    except people.PeopleError as problem:
        messages.error(request, str(problem))
    return redirect("people")


@require_POST
@permission_required(MANAGE_PEOPLE, raise_exception=True)
def invitation_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    invitation = get_object_or_404(Invitation, pk=pk)
    if invitation.revoke():
        record(Action.INVITATION_REVOKED, invitation)
        messages.success(request, f"The invitation for {invitation.email} is revoked.")
    else:
        messages.info(request, f"The invitation for {invitation.email} was {invitation.state}.")
    return redirect("people")


@require_POST
@permission_required(MANAGE_PEOPLE, raise_exception=True)
def join_request_decide(request: HttpRequest, pk: int) -> HttpResponse:
    join_request = get_object_or_404(JoinRequest, pk=pk)
    approve = request.POST.get("decision") == "approve"
    role = request.POST.get("role", Role.VIEWER)
    if role not in Role.values:
        role = Role.VIEWER
    invitation = join_request.decide(approve, by=request.user, role=role)
    if approve and invitation is not None:
        mailed = people.send_approval(invitation)
        record(Action.JOIN_APPROVED, join_request, role=role, mailed=mailed)
        messages.success(
            request,
            f"{join_request.email} may sign in now as {role}"
            + (" (told by mail)." if mailed else " — tell them so."),
        )
    elif join_request.state == JoinRequest.State.DENIED:
        record(Action.JOIN_DENIED, join_request)
        messages.info(request, f"The request of {join_request.email} is denied.")
    return redirect("people")


# --- coming in -------------------------------------------------------------------------------


@login_not_required
@sensitive_post_parameters("password1", "password2")
def invitation(request: HttpRequest, token: str) -> HttpResponse:
    """The invitation link: sign in with a provider, or (PASSWORD_LOGIN) choose a password."""
    found = Invitation.from_token(token)
    form = PasswordAccountForm(request.POST or None) if settings.PASSWORD_LOGIN else None
    context = {"invitation": found, "form": form}
    if found is None or not found.is_pending or request.user.is_authenticated:
        return _no_store(render(request, "fastflow_site/invitation.html", context))
    if request.method == "POST" and form is not None and form.is_valid():
        user = _accept_with_password(request, found, form)
        if user is not None:
            login(request, user, backend="allauth.account.auth_backends.AuthenticationBackend")
            messages.success(request, f"Welcome to Fast-Flow: you are {found.role} here.")
            return redirect("home")
        context["used_up"] = True
    return _no_store(render(request, "fastflow_site/invitation.html", context))


def _accept_with_password(request: HttpRequest, found: Invitation, form: PasswordAccountForm):
    """The account for an invitation; None when the invitation was used meanwhile."""
    try:
        with transaction.atomic():
            user = get_user_model().objects.create_user(
                form.cleaned_data["username"], found.email, form.cleaned_data["password1"]
            )
            if not found.accept(user):
                raise IntegrityError("invitation used")
            # The link was sent to (or handed to) the invited address: it counts as verified.
            EmailAddress.objects.create(user=user, email=found.email, verified=True, primary=True)
            set_role(user, found.role)
    except IntegrityError:
        return None
    record(Action.INVITATION_ACCEPTED, found, actor=user)
    record(Action.PERSON_JOINED, user, actor=user, role=found.role, reason="invitation")
    return user


@login_not_required
@require_POST
def join_request(request: HttpRequest) -> HttpResponse:
    """Ask to join, with the address a refused sign-in proved (kept in the session)."""
    refused = request.session.get(REFUSED_SESSION_KEY) or {}
    form = JoinRequestForm(request.POST)
    if not settings.JOIN_REQUESTS or not refused.get("email") or not form.is_valid():
        return render(request, "account/signup_closed.html", status=400)
    try:
        made = JoinRequest.objects.create(
            email=refused["email"].lower(),
            name=refused.get("name", "")[:200],
            provider=refused.get("provider", ""),
            message=form.cleaned_data["message"],
        )
    except IntegrityError:
        made = None  # one is waiting already
    if made is not None:
        record(Action.JOIN_REQUESTED, made, provider=made.provider)
        people.tell_admins_of_join_request(made.email)
    request.session.pop(REFUSED_SESSION_KEY, None)
    return render(request, "fastflow_site/join_requested.html", {"email": refused["email"]})


# --- the audit log (admins) ------------------------------------------------------------------


@permission_required("fastflow_site.view_auditentry", raise_exception=True)
def audit_log(request: HttpRequest) -> HttpResponse:
    form = AuditFilterForm(request.GET or None)
    entries = form.filter(AuditEntry.objects.all())
    page, query = page_of(request, entries, AUDIT_ENTRIES_PER_PAGE)
    context = {
        "form": form,
        "page": page,
        "query": query,
        "retention_days": settings.AUDIT_RETENTION_DAYS,
    }
    return render(request, "fastflow_site/audit_log.html", context)


# --- your account ----------------------------------------------------------------------------


def account(request: HttpRequest, new_token: str = "", form: TokenForm | None = None):
    user = request.user
    may_run = user.has_perm("runs_app.add_pipelinerun")
    context = {
        "role": role_of(user),
        "providers": SocialAccount.objects.filter(user=user),
        "has_password": user.has_usable_password() and settings.PASSWORD_LOGIN,
        "tokens": ApiToken.objects.filter(user=user),
        "token_form": form or TokenForm(may_run=may_run),
        "new_token": new_token,
    }
    return _no_store(render(request, "fastflow_site/account.html", context))


@require_POST
def token_create(request: HttpRequest) -> HttpResponse:
    may_run = request.user.has_perm("runs_app.add_pipelinerun")
    form = TokenForm(request.POST, may_run=may_run)
    if not form.is_valid():
        return account(request, form=form)
    token, text = ApiToken.make(
        request.user, form.cleaned_data["name"], form.cleaned_data["scope"], form.expires_at()
    )
    record(Action.TOKEN_CREATED, token, scope=token.scope)
    return account(request, new_token=text)


@require_POST
def token_revoke(request: HttpRequest, prefix: str) -> HttpResponse:
    token = get_object_or_404(ApiToken, prefix=prefix, user=request.user)
    if token.revoke():
        record(Action.TOKEN_REVOKED, token)
        messages.success(request, f"Token {token.name} revoked.")
    return redirect("account")
