"""Key rotation: every stored Fernet token re-encrypted under the newest key.

Stored tokens are the EncryptedTextFields of any installed model (secrets_app.fields).
Tokens Fast-Flow reads but does not own — `encrypted_env` in pipeline.json files, which
live in git — are listed instead: a model offers them with a classmethod
`fernet_tokens_in_files()` yielding (where, name, token).
"""

from __future__ import annotations

from collections.abc import Iterator

from django.apps import apps
from django.db import transaction

from secrets_app import crypto
from secrets_app.fields import encrypted_fields


def rotate_stored_tokens() -> dict[str, int]:
    """Re-encrypt every stored token; {"app.Model.field": count}. All or nothing: raises
    crypto.DecryptionError naming the first value no key opens, and changes nothing."""
    counts: dict[str, int] = {}
    with transaction.atomic():
        for model, field in encrypted_fields():
            rows = model._default_manager.exclude(**{field: ""}).values_list("pk", field)
            rotated = 0
            for pk, token in rows:
                try:
                    new_token = crypto.rotate(token)
                except crypto.DecryptionError:
                    what = model._default_manager.get(pk=pk)
                    raise crypto.DecryptionError(
                        f"{model._meta.verbose_name} {what} ({field.replace('_', ' ')}) does not "
                        "decrypt with any key in ENCRYPTION_KEY: add the key it was made with, "
                        "or replace the value"
                    ) from None
                model._default_manager.filter(pk=pk).update(**{field: new_token})
                rotated += 1
            counts[f"{model._meta.label}.{field}"] = rotated
    return counts


def stale_file_tokens() -> Iterator[str]:
    """Tokens in files (pipeline.json) not made with the newest key, described for people."""
    for model in apps.get_models():
        source = getattr(model, "fernet_tokens_in_files", None)
        if source is None:
            continue
        for where, name, token in source():
            if crypto.is_under_newest_key(token):
                continue
            try:
                crypto.decrypt(token)
                state = "uses an older key: encrypt it again (manage.py encrypt_value)"
            except crypto.DecryptionError:
                state = "does not decrypt with any key"
            yield f"{where}: encrypted_env {name} {state}"
