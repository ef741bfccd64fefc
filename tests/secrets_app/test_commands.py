"""manage.py encrypt_value and rotate_encryption_key."""

from __future__ import annotations

import io
import json

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command

from pipelines_app.discovery import discover
from pipelines_app.models import GitSource
from secrets_app import crypto
from secrets_app.models import Variable

pytestmark = pytest.mark.django_db

OLD_KEY = Fernet.generate_key().decode()
NEW_KEY = Fernet.generate_key().decode()


def test_encrypt_value_reads_the_value_from_stdin(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("from-stdin\n"))
    out = io.StringIO()
    call_command("encrypt_value", "--name", "DB_PASSWORD", stdout=out)
    line = json.loads(out.getvalue())
    assert crypto.decrypt(line["DB_PASSWORD"]) == "from-stdin"


def test_rotation_re_encrypts_stored_secrets_and_lists_old_file_tokens(settings, make_pipeline):
    settings.ENCRYPTION_KEYS = [OLD_KEY]
    variable = Variable(name="API_KEY", kind=Variable.Kind.SECRET)
    variable.set_value("rotate-me")
    variable.save()
    make_pipeline("etl", config={"encrypted_env": {"FROM_FILE": crypto.encrypt("old")}})
    discover()
    settings.ENCRYPTION_KEYS = [NEW_KEY, OLD_KEY]
    out = io.StringIO()
    call_command("rotate_encryption_key", stdout=out)
    assert "re-encrypted 1 value(s) of secrets_app.Variable.encrypted_value" in out.getvalue()
    assert "etl: encrypted_env FROM_FILE uses an older key" in out.getvalue()
    settings.ENCRYPTION_KEYS = [NEW_KEY]  # the old key can go now
    assert Variable.objects.get().plain_value() == "rotate-me"


def test_rotation_changes_nothing_when_a_secret_does_not_decrypt(settings):
    settings.ENCRYPTION_KEYS = [OLD_KEY]
    for name in ("A_SECRET", "B_SECRET"):
        variable = Variable(name=name, kind=Variable.Kind.SECRET)
        variable.set_value(f"value of {name}")
        variable.save()
    settings.ENCRYPTION_KEYS = [NEW_KEY]
    Variable.objects.filter(name="A_SECRET").update(
        encrypted_value=Fernet(NEW_KEY.encode()).encrypt(b"fine").decode()
    )
    before = dict(Variable.objects.values_list("name", "encrypted_value"))
    with pytest.raises(CommandError, match=r"B_SECRET .* does not decrypt"):
        call_command("rotate_encryption_key", stdout=io.StringIO())
    assert dict(Variable.objects.values_list("name", "encrypted_value")) == before


def test_rotation_re_encrypts_every_encrypted_field_of_every_app(settings):
    """The repository's token, SSH key and webhook secret too, not only variables."""
    settings.ENCRYPTION_KEYS = [OLD_KEY]
    source = GitSource(url="https://example.com/pipelines.git")
    for field, value in (
        ("token", "ghp_token"),
        ("ssh_private_key", "PRIVATE KEY"),
        ("webhook_secret", "hook secret"),
    ):
        source.set_secret(field, value)
    source.save()
    settings.ENCRYPTION_KEYS = [NEW_KEY, OLD_KEY]
    out = io.StringIO()
    call_command("rotate_encryption_key", stdout=out)
    for field in ("token_encrypted", "ssh_private_key_encrypted", "webhook_secret_encrypted"):
        assert f"re-encrypted 1 value(s) of pipelines_app.GitSource.{field}" in out.getvalue()
    settings.ENCRYPTION_KEYS = [NEW_KEY]  # the old key can go now
    source = GitSource.load()
    assert source.secret("token") == "ghp_token"
    assert source.secret("ssh_private_key") == "PRIVATE KEY"
    assert source.secret("webhook_secret") == "hook secret"
