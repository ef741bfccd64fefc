"""Fernet with the instance's keys: round trips, several keys, rotation, other instances."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from secrets_app import crypto

OLD_KEY = Fernet.generate_key().decode()
NEW_KEY = Fernet.generate_key().decode()


def test_a_value_round_trips(settings):
    settings.ENCRYPTION_KEYS = [NEW_KEY]
    token = crypto.encrypt("hunter2 ünïcode")
    assert "hunter2" not in token
    assert crypto.decrypt(token) == "hunter2 ünïcode"


def test_a_token_made_elsewhere_with_the_same_key_decrypts(settings):
    """Another Fast-Flow instance (or plain `cryptography`) with the same key: same format."""
    settings.ENCRYPTION_KEYS = [NEW_KEY]
    legacy_token = Fernet(NEW_KEY.encode()).encrypt(b"from the old instance").decode()
    assert crypto.decrypt(legacy_token) == "from the old instance"


def test_old_keys_still_decrypt_and_new_values_use_the_newest(settings):
    settings.ENCRYPTION_KEYS = [OLD_KEY]
    old_token = crypto.encrypt("kept")
    settings.ENCRYPTION_KEYS = [NEW_KEY, OLD_KEY]
    assert crypto.decrypt(old_token) == "kept"
    assert not crypto.is_under_newest_key(old_token)
    assert crypto.is_under_newest_key(crypto.encrypt("fresh"))
    rotated = crypto.rotate(old_token)
    settings.ENCRYPTION_KEYS = [NEW_KEY]
    assert crypto.decrypt(rotated) == "kept"


@pytest.mark.parametrize("token", ["not-a-token", "", "gAAAAABfake"])
def test_a_wrong_or_damaged_token_is_a_clear_error_never_garbage(settings, token):
    settings.ENCRYPTION_KEYS = [NEW_KEY]
    with pytest.raises(crypto.DecryptionError) as error:
        crypto.decrypt(token, "encrypted_env DB_PASSWORD")
    assert "encrypted_env DB_PASSWORD does not decrypt" in str(error.value)


def test_a_token_of_another_key_names_the_variable_not_the_value(settings):
    settings.ENCRYPTION_KEYS = [OLD_KEY]
    token = crypto.encrypt("s3cr3t-value")
    settings.ENCRYPTION_KEYS = [NEW_KEY]
    with pytest.raises(crypto.DecryptionError) as error:
        crypto.decrypt(token, "encrypted_env API_TOKEN")
    assert "API_TOKEN" in str(error.value)
    assert "s3cr3t-value" not in str(error.value) and token not in str(error.value)
