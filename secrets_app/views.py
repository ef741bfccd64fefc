"""The secrets page for operators: stored secrets and parameters, and "encrypt a value for
pipeline.json". Secret values are write-only here as everywhere."""

from __future__ import annotations

import json

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from secrets_app import crypto
from secrets_app.forms import EncryptForm, VariableForm
from secrets_app.models import Variable

MANAGE_SECRETS = "secrets_app.manage_secrets"


def _may_touch(request: HttpRequest, *variables: Variable) -> bool:
    """Operators manage parameters; a secret (before or after the change) needs an admin."""
    return request.user.has_perm(MANAGE_SECRETS) or not any(v.is_secret for v in variables)


def _variable_form(request: HttpRequest, instance: Variable | None = None) -> VariableForm:
    form = VariableForm(request.POST or None, instance=instance)
    if not request.user.has_perm(MANAGE_SECRETS):
        form.fields["kind"].choices = [(Variable.Kind.PARAMETER, "parameter")]
        form.fields["kind"].initial = Variable.Kind.PARAMETER
    return form


def _save(request: HttpRequest, form: VariableForm, *, refused: str) -> HttpResponse:
    """A valid form's variable stored, unless it would be a secret this person may not touch."""
    variable = form.save(commit=False)
    if not _may_touch(request, variable):
        return HttpResponse(refused, status=403)
    variable.updated_by = request.user
    variable.save()
    messages.success(request, f"Saved {variable}.")
    return redirect("secrets_app:list")


def _get_variable(name: str, pipeline: str | None) -> Variable:
    if pipeline is None:
        return get_object_or_404(Variable, name=name, pipeline__isnull=True)
    return get_object_or_404(Variable, name=name, pipeline__name=pipeline)


@sensitive_post_parameters("new_value")
@permission_required("secrets_app.view_variable", raise_exception=True)
def variable_list(request: HttpRequest) -> HttpResponse:
    form = _variable_form(request)
    if request.method == "POST":
        if not request.user.has_perm("secrets_app.add_variable"):
            return HttpResponse("You may not add secrets or parameters.", status=403)
        if form.is_valid():
            return _save(request, form, refused="Only admins may add secrets.")
    variables = Variable.objects.select_related("pipeline", "updated_by")
    return render(
        request,
        "secrets_app/variable_list.html",
        {"variables": variables, "form": form, "encrypt_form": EncryptForm()},
    )


@sensitive_post_parameters("new_value")
@permission_required("secrets_app.change_variable", raise_exception=True)
def variable_edit(request: HttpRequest, name: str, pipeline: str | None = None) -> HttpResponse:
    variable = _get_variable(name, pipeline)
    if not _may_touch(request, variable):
        return HttpResponse("Only admins may replace secrets.", status=403)
    form = _variable_form(request, variable)
    if request.method == "POST" and form.is_valid():
        return _save(request, form, refused="Only admins may make a parameter a secret.")
    return render(request, "secrets_app/variable_edit.html", {"variable": variable, "form": form})


@require_POST
@permission_required("secrets_app.delete_variable", raise_exception=True)
def variable_delete(request: HttpRequest, name: str, pipeline: str | None = None) -> HttpResponse:
    variable = _get_variable(name, pipeline)
    if not _may_touch(request, variable):
        return HttpResponse("Only admins may delete secrets.", status=403)
    variable.delete()
    messages.success(request, f"Deleted {variable}.")
    return redirect("secrets_app:list")


@sensitive_post_parameters("value")
@permission_required(MANAGE_SECRETS, raise_exception=True)
def encrypt_value(request: HttpRequest) -> HttpResponse:
    form = EncryptForm(request.POST or None)
    token = snippet = ""
    if request.method == "POST" and form.is_valid():
        token = crypto.encrypt(form.cleaned_data["value"])
        if form.cleaned_data["name"]:
            snippet = json.dumps({"encrypted_env": {form.cleaned_data["name"]: token}}, indent=2)
    return render(
        request,
        "secrets_app/encrypt.html",
        {"encrypt_form": form, "token": token, "snippet": snippet},
    )
