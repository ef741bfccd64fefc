"""Secrets and parameters in the operator console: secret values are write-only here too
(a password input that never renders what is stored)."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters

from secrets_app.forms import VariableForm
from secrets_app.models import Variable


@admin.register(Variable)
class VariableAdmin(admin.ModelAdmin):
    form = VariableForm
    list_display = ["name", "kind", "scope_display", "shown_value", "updated_at", "updated_by"]
    list_filter = ["kind", ("pipeline", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["name", "description", "pipeline__name"]
    list_select_related = ["pipeline", "updated_by"]
    raw_id_fields = ["pipeline"]
    readonly_fields = ["updated_at", "updated_by"]

    def get_fields(self, request: HttpRequest, obj: Variable | None = None) -> list[str]:
        return ["name", "kind", "pipeline", "new_value", "description", *self.readonly_fields]

    @admin.display(description="scope", ordering="pipeline__name")
    def scope_display(self, variable: Variable) -> str:
        return variable.scope

    @admin.display(description="value")
    def shown_value(self, variable: Variable) -> str:
        return "•••••• (secret)" if variable.is_secret else variable.value

    @method_decorator(sensitive_post_parameters("new_value"))
    def changeform_view(self, request: HttpRequest, *args, **kwargs):
        # Error reports (and the debug page) never show a value typed into the form.
        return super().changeform_view(request, *args, **kwargs)

    def save_model(self, request: HttpRequest, obj: Variable, form, change: bool) -> None:
        obj.updated_by = request.user
        super().save_model(request, obj, form, change)
