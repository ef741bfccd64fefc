from __future__ import annotations

from datetime import timedelta

from django import forms
from django.contrib.auth import get_user_model, password_validation
from django.utils import timezone

from fastflow_site.models import ApiToken, AuditEntry
from fastflow_site.roles import Role


class InviteForm(forms.Form):
    email = forms.EmailField()
    role = forms.ChoiceField(choices=Role.choices, initial=Role.VIEWER)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


class PasswordAccountForm(forms.Form):
    """Accepting an invitation with a password (when PASSWORD_LOGIN is on)."""

    username = forms.RegexField(
        regex=r"^[\w.@+-]+\Z",
        max_length=150,
        error_messages={"invalid": "Letters, digits and @ . + - _ only."},
    )
    password1 = forms.CharField(label="Password", strip=False, widget=forms.PasswordInput)
    password2 = forms.CharField(label="Password again", strip=False, widget=forms.PasswordInput)

    def clean_username(self) -> str:
        username = self.cleaned_data["username"]
        if get_user_model().objects.filter(username__iexact=username).exists():
            raise forms.ValidationError("That name is taken; choose another.")
        return username

    def clean(self) -> dict:
        cleaned = super().clean()
        first, second = cleaned.get("password1"), cleaned.get("password2")
        if first and second and first != second:
            self.add_error("password2", "The two passwords differ.")
        elif first:
            user = get_user_model()(username=cleaned.get("username", ""))
            try:
                password_validation.validate_password(first, user)
            except forms.ValidationError as problems:
                self.add_error("password1", problems)
        return cleaned


class JoinRequestForm(forms.Form):
    message = forms.CharField(
        required=False, max_length=500, widget=forms.Textarea(attrs={"rows": 3})
    )


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What uses it, e.g. CI or a laptop script.")
    scope = forms.ChoiceField(choices=ApiToken.Scope.choices, initial=ApiToken.Scope.READ)
    expires_in_days = forms.IntegerField(
        required=False, min_value=1, max_value=3650, help_text="Empty: it never expires."
    )

    def __init__(self, *args, may_run: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not may_run:  # a viewer's token can only read, like the viewer
            self.fields["scope"].choices = [(ApiToken.Scope.READ, ApiToken.Scope.READ.label)]

    def expires_at(self):
        days = self.cleaned_data.get("expires_in_days")
        return timezone.now() + timedelta(days=days) if days else None


class AuditFilterForm(forms.Form):
    person = forms.CharField(required=False, label="Person")
    action = forms.ChoiceField(
        required=False, choices=[("", "any action"), *AuditEntry.Action.choices]
    )
    object = forms.CharField(required=False, label="Object")
    since = forms.DateTimeField(
        required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"})
    )
    until = forms.DateTimeField(
        required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"})
    )

    def filter(self, entries):
        if not self.is_valid():
            return entries
        data = self.cleaned_data
        if data["person"]:
            entries = entries.filter(actor_name__icontains=data["person"])
        if data["action"]:
            entries = entries.filter(action=data["action"])
        if data["object"]:
            text = data["object"]
            entries = entries.filter(object_repr__icontains=text) | entries.filter(object_id=text)
        if data["since"]:
            entries = entries.filter(at__gte=data["since"])
        if data["until"]:
            entries = entries.filter(at__lte=data["until"])
        return entries
