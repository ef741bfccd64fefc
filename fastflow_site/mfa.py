"""django-allauth's two-factor adapter (installed with password sign-in only)."""

from __future__ import annotations

from allauth.mfa.adapter import DefaultMFAAdapter

from secrets_app import crypto


class MFAAdapter(DefaultMFAAdapter):
    """Two-factor secrets (the TOTP key, the recovery codes' seed) are stored Fernet-encrypted
    with the instance's ENCRYPTION_KEY, like every other secret."""

    def encrypt(self, text: str) -> str:
        return crypto.encrypt(text)

    def decrypt(self, encrypted_text: str) -> str:
        return crypto.decrypt(encrypted_text, "a two-factor secret")
