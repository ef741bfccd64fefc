"""manage.py rotate_encryption_key: re-encrypt every stored secret under the newest key.

Rotation: put the new key first in ENCRYPTION_KEY (`new,old`), restart, run this command,
then re-encrypt the encrypted_env tokens it lists (they live in git, which Fast-Flow does
not write), and finally drop the old key. All or nothing: if one stored secret does not
decrypt, nothing is changed.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from pipelines_app.models import Pipeline
from secrets_app import crypto
from secrets_app.models import Variable


class Command(BaseCommand):
    help = "Re-encrypt stored secrets under the newest ENCRYPTION_KEY; list old file tokens."

    def handle(self, *args, **options) -> None:
        try:
            with transaction.atomic():
                rotated = Variable.rotate_all()
        except crypto.DecryptionError as problem:
            raise CommandError(f"nothing changed: {problem}") from None
        self.stdout.write(f"re-encrypted {rotated} stored secret(s) under the newest key")
        stale = list(_old_file_tokens())
        for line in stale:
            self.stdout.write(self.style.WARNING(line))
        if not stale:
            self.stdout.write(
                "every encrypted_env token in pipeline.json files uses the newest key"
            )


def _old_file_tokens():
    """encrypted_env tokens of pipeline.json files not made with the newest key."""
    for pipeline in Pipeline.objects.filter(state=Pipeline.State.PRESENT):
        spec = pipeline.spec
        sources = [("", spec.run.encrypted_env)]
        sources += [(f" schedule {s.id}", s.overrides.encrypted_env) for s in spec.schedules]
        for where, tokens in sources:
            for name, token in tokens.items():
                if crypto.is_under_newest_key(token):
                    continue
                try:
                    crypto.decrypt(token)
                    state = "uses an older key: encrypt it again (manage.py encrypt_value)"
                except crypto.DecryptionError:
                    state = "does not decrypt with any key"
                yield f"{pipeline.name}{where}: encrypted_env {name} {state}"
