from __future__ import annotations

from django import forms

from secrets_app.env_names import is_env_name
from secrets_app.models import Variable


def write_only_input() -> forms.PasswordInput:
    """An input for a secret: never rendered with a value, never offered for autofill."""
    return forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"})


class WriteOnlySecretForm(forms.ModelForm):
    """A model form with one write-only secret (`write_only_field`): never shown, required while
    nothing is stored, empty keeps the stored one. Subclasses say where it is stored."""

    write_only_field = "secret"
    missing_message = "A new one needs this."

    def has_stored_secret(self) -> bool:
        raise NotImplementedError

    def store_secret(self, instance, value: str) -> None:
        raise NotImplementedError

    def clean(self) -> dict:
        cleaned = super().clean()
        if not cleaned.get(self.write_only_field) and not self.has_stored_secret():
            self.add_error(self.write_only_field, self.missing_message)
        return cleaned

    def save(self, commit: bool = True):
        instance = super().save(commit=False)
        if value := self.cleaned_data.get(self.write_only_field):
            self.store_secret(instance, value)
        if commit:
            instance.save()
        return instance


class VariableForm(forms.ModelForm):
    """Add or replace a stored variable. A secret's value is write-only: never rendered,
    left empty to keep the stored one."""

    new_value = forms.CharField(
        label="Value",
        required=False,
        strip=False,
        widget=write_only_input(),
    )

    class Meta:
        model = Variable
        fields = ["name", "kind", "pipeline", "description"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["pipeline"].empty_label = "all pipelines (global)"
        editing = self.instance.pk is not None
        if editing and not self.instance.is_secret:
            self.fields["new_value"].widget = forms.TextInput(attrs={"autocomplete": "off"})
            self.fields["new_value"].initial = self.instance.value
        if editing and self.instance.is_secret:
            self.fields["new_value"].help_text = (
                "Stored encrypted and never shown again. Leave empty to keep it; type a new "
                "value to replace it."
            )
        if editing:
            # A secret stays a secret: turning it into a parameter would show its value.
            self.fields["kind"].disabled = self.instance.is_secret

    def clean(self) -> dict:
        cleaned = super().clean()
        if self.instance.pk is None and not cleaned.get("new_value"):
            self.add_error("new_value", "A new variable needs a value.")
        return cleaned

    def save(self, commit: bool = True) -> Variable:
        variable = super().save(commit=False)
        value = self.cleaned_data.get("new_value") or ""
        if value or (not variable.is_secret and "new_value" in self.changed_data):
            variable.set_value(value)
        elif "kind" in self.changed_data:
            variable.set_value(variable.value)  # a parameter made secret: encrypt what it held
        if commit:
            variable.save()
        return variable


class EncryptForm(forms.Form):
    """'Encrypt a value for pipeline.json': a Fernet token for encrypted_env."""

    name = forms.CharField(
        required=False,
        max_length=200,
        help_text="Optional: the variable name, to get a ready-to-paste line.",
    )
    value = forms.CharField(
        strip=False,
        widget=write_only_input(),
    )

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if name and not is_env_name(name):
            raise forms.ValidationError(
                "Not a variable name: letters, digits and _, not first a digit."
            )
        return name
