"""A model field that holds a Fernet token, never plain text.

Every such field on any model is found by `manage.py rotate_encryption_key`, so a new
encrypted value anywhere in Fast-Flow is re-encrypted on rotation without this app having
to know the model (secrets_app imports no other app).
"""

from __future__ import annotations

from django.apps import apps
from django.db import models


class EncryptedTextField(models.TextField):
    """A Fernet token (secrets_app.crypto) or empty; not editable in forms."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("blank", True)
        kwargs.setdefault("editable", False)
        super().__init__(*args, **kwargs)


def encrypted_fields() -> list[tuple[type[models.Model], str]]:
    """(model, field name) of every EncryptedTextField of the installed apps."""
    return [
        (model, field.name)
        for model in apps.get_models()
        for field in model._meta.get_fields()
        if isinstance(field, EncryptedTextField)
    ]
