"""Secrets and parameters in the operator console: secret values are write-only here too
(a password input that never renders what is stored)."""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters

from secrets_app.forms import VariableForm
from secrets_app.models import Variable

MANAGE_SECRETS = "secrets_app.manage_secrets"


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

    def _may_touch(self, request: HttpRequest, obj: Variable | None) -> bool:
        """Operators manage parameters; secrets are for admins (secrets_app.manage_secrets)."""
        return obj is None or not obj.is_secret or request.user.has_perm(MANAGE_SECRETS)

    def has_change_permission(self, request: HttpRequest, obj: Variable | None = None) -> bool:
        return super().has_change_permission(request, obj) and self._may_touch(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Variable | None = None) -> bool:
        return super().has_delete_permission(request, obj) and self._may_touch(request, obj)

    def get_form(self, request: HttpRequest, obj: Variable | None = None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        if not request.user.has_perm(MANAGE_SECRETS):
            form.base_fields["kind"].choices = [(Variable.Kind.PARAMETER, "parameter")]
        return form

    def save_model(self, request: HttpRequest, obj: Variable, form, change: bool) -> None:
        if not self._may_touch(request, obj):
            raise PermissionDenied("Only admins may store secrets.")
        obj.updated_by = request.user
        super().save_model(request, obj, form, change)
