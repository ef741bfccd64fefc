"""manage.py rotate_encryption_key: re-encrypt every stored secret under the newest key.

Rotation: put the new key first in ENCRYPTION_KEY (`new,old`), restart, run this command,
then re-encrypt the encrypted_env tokens it lists (they live in git, which Fast-Flow does
not write), and finally drop the old key. All or nothing: if one stored value does not
decrypt, nothing is changed.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from secrets_app import crypto
from secrets_app.rotation import rotate_stored_tokens, stale_file_tokens


class Command(BaseCommand):
    help = "Re-encrypt every stored secret under the newest ENCRYPTION_KEY; list old file tokens."

    def handle(self, *args, **options) -> None:
        try:
            counts = rotate_stored_tokens()
        except crypto.DecryptionError as problem:
            raise CommandError(f"nothing changed: {problem}") from None
        for what, count in counts.items():
            self.stdout.write(f"re-encrypted {count} value(s) of {what} under the newest key")
        stale = list(stale_file_tokens())
        for line in stale:
            self.stdout.write(self.style.WARNING(line))
        if not stale:
            self.stdout.write(
                "every encrypted_env token in pipeline.json files uses the newest key"
            )
