"""People, roles, invitations, join requests, API tokens, sign-in providers and the audit
log in the operator console. The audit log is read-only; roles are set one per person."""

from __future__ import annotations

from allauth.socialaccount.models import SocialApp, SocialToken
from allauth.usersessions.models import UserSession
from django import forms
from django.apps import apps
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.forms import UserChangeForm
from django.db.models import QuerySet
from django.http import HttpRequest

from fastflow_site import people
from fastflow_site.audit import Action, record
from fastflow_site.models import ApiToken, AuditEntry, Invitation, JoinRequest, SignInProvider
from fastflow_site.roles import Role, role_of
from secrets_app.forms import WriteOnlySecretForm, write_only_input

User = get_user_model()

# Provider apps are SignInProviders here (their secret encrypted), and provider tokens are
# not stored (SOCIALACCOUNT_STORE_TOKENS off): allauth's own pages for them would mislead.
for model in (SocialApp, SocialToken):
    if admin.site.is_registered(model):
        admin.site.unregister(model)


class PersonForm(UserChangeForm):
    role = forms.ChoiceField(choices=Role.choices, help_text="Each person has exactly one.")

    class Meta(UserChangeForm.Meta):
        model = User
        fields = ["username", "password", "email", "first_name", "last_name", "is_active"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["role"].initial = role_of(self.instance) or Role.VIEWER


admin.site.unregister(User)


@admin.register(User)
class PersonAdmin(UserAdmin):
    form = PersonForm
    list_display = ["username", "email", "role_display", "is_active", "last_login"]
    list_filter = ["is_active", "groups"]
    fieldsets = [
        (None, {"fields": ["username", "password"]}),
        ("Person", {"fields": ["first_name", "last_name", "email"]}),
        ("Access", {"fields": ["role", "is_active"]}),
        ("Dates", {"fields": ["last_login", "date_joined"]}),
    ]
    readonly_fields = ["last_login", "date_joined"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).prefetch_related("groups")

    @admin.display(description="role")
    def role_display(self, user) -> str:
        return role_of(user) or "—"

    def save_model(self, request: HttpRequest, obj, form, change: bool) -> None:
        was_active = User.objects.filter(pk=obj.pk).values_list("is_active", flat=True).first()
        wants_active = obj.is_active
        if change:
            obj.is_active = was_active  # (de)activation goes through people.* below
        super().save_model(request, obj, form, change)
        # A person added here by hand starts as a viewer (the add form has no role).
        role = form.cleaned_data.get("role") or (None if change else Role.VIEWER)
        try:
            if role:
                people.change_role(obj, role, by=request.user)
            if change and was_active and not wants_active:
                people.deactivate(obj, by=request.user)
            elif change and not was_active and wants_active:
                people.reactivate(obj, by=request.user)
        except people.PeopleError as problem:
            self.message_user(request, str(problem), messages.ERROR)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


# allauth's own pages for these show a session key (a credential) and two-factor secrets.
admin.site.unregister(UserSession)


@admin.register(UserSession)
class UserSessionAdmin(ReadOnlyAdmin):
    list_display = ["user", "created_at", "last_seen_at", "ip", "user_agent"]
    fields = list_display
    search_fields = ["user__username", "ip"]
    actions = ["end_sessions"]

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return request.user.has_perm("usersessions.delete_usersession")

    @admin.action(description="End the selected sessions", permissions=["delete"])
    def end_sessions(self, request: HttpRequest, queryset: QuerySet[UserSession]) -> None:
        for user_session in queryset:
            user_session.end()


class AuthenticatorAdmin(ReadOnlyAdmin):
    list_display = ["user", "type", "created_at", "last_used_at"]
    fields = list_display
    list_filter = ["type"]

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        # Removing a lost authenticator lets its person sign in with the password alone.
        return request.user.has_perm("mfa.delete_authenticator")


if apps.is_installed("allauth.mfa"):  # with password sign-in only (settings)
    authenticator = apps.get_model("mfa", "Authenticator")
    admin.site.unregister(authenticator)
    admin.site.register(authenticator, AuthenticatorAdmin)


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    list_display = ["at", "actor_name", "action", "object_type", "object_repr", "ip_address", "via"]
    list_filter = ["action", "via", "object_type", ("at", admin.DateFieldListFilter)]
    search_fields = ["actor_name", "object_repr", "object_id", "ip_address"]
    date_hierarchy = "at"
    list_select_related = ["actor"]


class InvitationForm(forms.ModelForm):
    class Meta:
        model = Invitation
        fields = ["email", "role"]


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    form = InvitationForm
    list_display = ["email", "role", "state", "created_by", "created_at", "expires_at"]
    list_filter = ["role"]
    search_fields = ["email"]
    actions = ["revoke"]

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        return (
            ["email", "role", "created_by", "expires_at", "accepted_at", "accepted_by"]
            if obj
            else []
        )

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # revoke instead: the record stays

    def save_model(self, request: HttpRequest, obj: Invitation, form, change: bool) -> None:
        try:
            made, link, mailed = people.invite(obj.email, obj.role, by=request.user)
        except people.PeopleError as problem:
            self.message_user(request, str(problem), messages.ERROR)
            return
        obj.pk = made.pk
        sent = " (also sent by mail)" if mailed else ""
        self.message_user(
            request,
            f"Invitation link for {made.email}{sent} — copy it now: {link}",
            messages.SUCCESS,
        )

    def log_addition(self, request, obj, message):
        return None  # audited by people.invite

    @admin.action(description="Revoke the selected invitations")
    def revoke(self, request: HttpRequest, queryset: QuerySet[Invitation]) -> None:
        for invitation in queryset:
            if invitation.revoke():
                record(Action.INVITATION_REVOKED, invitation)


@admin.register(JoinRequest)
class JoinRequestAdmin(ReadOnlyAdmin):
    list_display = ["email", "name", "provider", "requested_at", "state", "decided_by"]
    list_filter = ["state"]
    actions = ["approve_as_viewer", "deny"]

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return request.user.has_perm("auth.change_user")  # for the actions

    @admin.action(description="Approve as viewer")
    def approve_as_viewer(self, request: HttpRequest, queryset: QuerySet[JoinRequest]) -> None:
        for join_request in queryset:
            if invitation := join_request.decide(True, by=request.user):
                record(Action.JOIN_APPROVED, join_request, role=Role.VIEWER,
                       mailed=people.send_approval(invitation))  # fmt: skip

    @admin.action(description="Deny")
    def deny(self, request: HttpRequest, queryset: QuerySet[JoinRequest]) -> None:
        for join_request in queryset:
            join_request.decide(False, by=request.user)
            if join_request.state == JoinRequest.State.DENIED:
                record(Action.JOIN_DENIED, join_request)


@admin.register(ApiToken)
class ApiTokenAdmin(ReadOnlyAdmin):
    list_display = ["name", "user", "prefix", "scope", "state", "created_at", "expires_at",
                    "last_used_at"]  # fmt: skip
    list_filter = ["scope"]
    search_fields = ["name", "prefix", "user__username", "user__email"]
    list_select_related = ["user"]
    exclude = ["token_hash"]
    actions = ["revoke"]

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return request.user.has_perm("fastflow_site.change_apitoken")  # for the action

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        for token in queryset:
            if token.revoke():
                record(Action.TOKEN_REVOKED, token)


class SignInProviderForm(WriteOnlySecretForm):
    server_url = forms.URLField(
        required=False,
        assume_scheme="https",
        help_text=SignInProvider._meta.get_field("server_url").help_text,
    )
    client_secret = forms.CharField(
        required=False,
        strip=True,
        widget=write_only_input(),
        help_text="Stored encrypted and never shown again; leave empty to keep the stored one.",
    )

    write_only_field = "client_secret"
    missing_message = "A new provider needs its client secret."

    class Meta:
        model = SignInProvider
        fields = ["kind", "name", "provider_id", "server_url", "client_id", "enabled"]

    def has_stored_secret(self) -> bool:
        return bool(self.instance.client_secret_encrypted)

    def store_secret(self, instance: SignInProvider, value: str) -> None:
        instance.set_secret(value)


@admin.register(SignInProvider)
class SignInProviderAdmin(admin.ModelAdmin):
    form = SignInProviderForm
    list_display = ["name", "kind", "provider_id", "client_id", "enabled"]
    fields = ["kind", "name", "provider_id", "server_url", "client_id", "client_secret", "enabled"]
