"""manage.py encrypt_value [--name NAME]: a Fernet token for pipeline.json's encrypted_env.

The value is read from standard input (asked for without echo on a terminal), never from
the command line, where it would land in the shell history and the process list.
"""

from __future__ import annotations

import getpass
import json
import sys

from django.core.management.base import BaseCommand, CommandError, CommandParser

from secrets_app import crypto
from secrets_app.env_names import is_env_name


class Command(BaseCommand):
    help = "Encrypt a value (read from stdin) with this instance's key, for encrypted_env."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", default="", help="print a ready-to-paste encrypted_env line")

    def handle(self, *args, name: str, **options) -> None:
        if name and not is_env_name(name):
            raise CommandError(f"{name!r} is not a variable name (letters, digits and _)")
        if sys.stdin.isatty():
            value = getpass.getpass("Value to encrypt (not shown): ")
        else:
            value = sys.stdin.read().removesuffix("\n")
        if not value:
            raise CommandError("nothing to encrypt: the value is empty")
        token = crypto.encrypt(value)
        if name:
            self.stdout.write(json.dumps({name: token}))
        else:
            self.stdout.write(token)
