"""What the audit log hears by itself: sign-ins and -outs, linked providers and two-factor
changes, and every change a person makes to the audited records (schedules, webhook keys,
secrets and parameters, the repository) — from a page, the admin, the API or a command."""

from __future__ import annotations

from allauth.socialaccount import signals as social_signals
from django.apps import apps
from django.contrib.auth import signals as auth_signals
from django.db.models.signals import post_delete, post_save, pre_save

from fastflow_site.audit import Action, is_acting, record
from pipelines_app.models import GitSource, Schedule, WebhookKey
from runs_app.signals import run_cancelled, run_started
from secrets_app.models import Variable


def connect() -> None:
    auth_signals.user_logged_in.connect(_signed_in, dispatch_uid="audit_sign_in")
    auth_signals.user_logged_out.connect(_signed_out, dispatch_uid="audit_sign_out")
    auth_signals.user_login_failed.connect(_sign_in_failed, dispatch_uid="audit_sign_in_failed")
    social_signals.social_account_added.connect(_provider_linked, dispatch_uid="audit_link")
    social_signals.social_account_removed.connect(_provider_unlinked, dispatch_uid="audit_unlink")
    if apps.is_installed("allauth.mfa"):  # only with password sign-in (settings)
        from allauth.mfa import signals as mfa_signals

        mfa_signals.authenticator_added.connect(_mfa_enabled, dispatch_uid="audit_mfa_on")
        mfa_signals.authenticator_removed.connect(_mfa_disabled, dispatch_uid="audit_mfa_off")
    run_started.connect(_run_started, dispatch_uid="audit_run_started")
    run_cancelled.connect(_run_cancelled, dispatch_uid="audit_run_cancelled")
    for model, name in AUDITED_MODELS.items():
        pre_save.connect(_remember_before, sender=model, dispatch_uid=f"audit_pre_{name}")
        post_save.connect(_saved, sender=model, dispatch_uid=f"audit_save_{name}")
        post_delete.connect(_deleted, sender=model, dispatch_uid=f"audit_delete_{name}")


def _run_started(sender, run, by, via, parameters, rerun_of, **kwargs) -> None:
    """Every start from a person or a caller (PipelineRun.start): exactly one entry."""
    if rerun_of is not None:
        record(Action.RUN_RERUN, run, actor=by, via=via, of=str(rerun_of.public_id))
    else:
        record(Action.RUN_STARTED, run, actor=by, via=via, parameters=parameters or None)


def _run_cancelled(sender, run, by, via, outcome, **kwargs) -> None:
    record(Action.RUN_CANCELLED, run, actor=by, via=via, outcome=outcome)


def _signed_in(sender, request, user, **kwargs) -> None:
    record(Action.SIGN_IN, user, actor=user, request=request, method=_method_of(request))


def _method_of(request) -> str:
    # allauth keeps how the person authenticated in the session ("password", "socialaccount"…)
    methods = request.session.get("account_authentication_methods", []) if request else []
    if not methods:
        return "password"
    last = methods[-1]
    return last.get("provider", last.get("method", "")) or "password"


def _signed_out(sender, request, user, **kwargs) -> None:
    if user is not None:
        record(Action.SIGN_OUT, user, actor=user, request=request)


def _sign_in_failed(sender, credentials, request=None, **kwargs) -> None:
    # `credentials` has the password already cleansed; keep only who was tried.
    tried = credentials.get("username") or credentials.get("email") or credentials.get("login")
    record(Action.SIGN_IN_FAILED, request=request, login=str(tried or "")[:200])


def _provider_linked(sender, request, sociallogin, **kwargs) -> None:
    account = sociallogin.account
    record(Action.PROVIDER_LINKED, account.user, request=request, provider=account.provider)


def _provider_unlinked(sender, request, socialaccount, **kwargs) -> None:
    record(
        Action.PROVIDER_UNLINKED,
        socialaccount.user,
        request=request,
        provider=socialaccount.provider,
    )


def _mfa_enabled(sender, request, user, authenticator, **kwargs) -> None:
    record(Action.MFA_ENABLED, user, request=request, kind=authenticator.type)


def _mfa_disabled(sender, request, user, authenticator, **kwargs) -> None:
    record(Action.MFA_DISABLED, user, request=request, kind=authenticator.type)


# --- changes to audited records -------------------------------------------------------------

AUDITED_MODELS = {Schedule: "schedule", WebhookKey: "webhook_key", Variable: "variable",
                  GitSource: "repository"}  # fmt: skip


def _remember_before(sender, instance, **kwargs) -> None:
    """Keep the stored version, so a save can say what it changed (never values)."""
    acting = is_acting()  # the system's own saves (discovery) cost no extra query
    instance._audit_before = (
        sender.objects.filter(pk=instance.pk).first()
        if acting and instance.pk is not None
        else None
    )


def _saved(sender, instance, created: bool, **kwargs) -> None:
    if not is_acting():
        return  # the system at work (discovery keeps pipeline.json schedules in step)
    before = getattr(instance, "_audit_before", None)
    changed = _changed_fields(before, instance) if before is not None else []
    if sender is Variable:
        action = _variable_action(instance, before, created, changed)
    elif sender is Schedule:
        action = Action.SCHEDULE_CREATED if created else Action.SCHEDULE_CHANGED
    elif sender is WebhookKey:
        action = Action.WEBHOOK_KEY_CREATED if created else Action.ADMIN_CHANGE
    else:
        action = Action.REPOSITORY_CHANGED
    record(action, instance, fields=[name for name in changed if "encrypted" not in name] or None)


def _variable_action(variable: Variable, before, created: bool, changed: list[str]) -> str:
    if not variable.is_secret:
        return Action.PARAMETER_CREATED if created else Action.PARAMETER_CHANGED
    if created:
        return Action.SECRET_CREATED
    if "encrypted_value" in changed or not before.is_secret:
        return Action.SECRET_REPLACED
    return Action.SECRET_CHANGED  # its description or scope


def _deleted(sender, instance, **kwargs) -> None:
    if not is_acting():
        return
    if sender is Variable:
        action = Action.SECRET_DELETED if instance.is_secret else Action.PARAMETER_DELETED
    elif sender is Schedule:
        action = Action.SCHEDULE_DELETED
    elif sender is WebhookKey:
        action = Action.WEBHOOK_KEY_REVOKED
    else:
        action = Action.REPOSITORY_CHANGED
    record(action, instance, deleted=True)


def _changed_fields(before, after) -> list[str]:
    return [
        field.attname
        for field in after._meta.concrete_fields
        if field.attname not in ("updated_at",)
        and getattr(before, field.attname) != getattr(after, field.attname)
    ]
