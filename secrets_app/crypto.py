"""Fernet encryption with the instance's keys (settings.ENCRYPTION_KEYS, newest first).

Tokens are plain Fernet tokens, so a value encrypted by another Fast-Flow instance (or by
`cryptography` directly) with the same key decrypts here. New values are always encrypted
with the newest key; older keys only decrypt, until `manage.py rotate_encryption_key` has
re-encrypted everything stored.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class DecryptionError(ValueError):
    """A token that none of the instance's keys opens; the message never holds a value."""


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.ENCRYPTION_KEYS))


def encrypt(value: str) -> str:
    return fernet().encrypt(value.encode()).decode()


def decrypt(token: str, what: str = "the value") -> str:
    """The plain text of `token`; DecryptionError naming `what` (never the token) if not."""
    try:
        return fernet().decrypt(token.strip().encode()).decode()
    except (InvalidToken, UnicodeError, ValueError, TypeError):
        raise DecryptionError(
            f"{what} does not decrypt with this instance's ENCRYPTION_KEY: it was encrypted "
            "with another key, or it is damaged. Encrypt it again with "
            "`manage.py encrypt_value` (or the secrets page), or add the old key to "
            "ENCRYPTION_KEY after the current one."
        ) from None


def is_under_newest_key(token: str) -> bool:
    try:
        Fernet(settings.ENCRYPTION_KEYS[0]).decrypt(token.strip().encode())
    except (InvalidToken, ValueError, TypeError):
        return False
    return True


def rotate(token: str) -> str:
    """`token` re-encrypted under the newest key (its timestamp kept)."""
    try:
        return fernet().rotate(token.encode()).decode()
    except InvalidToken:
        raise DecryptionError("a stored value does not decrypt with any key") from None
