"""The instance's own keys when the environment gives none: SECRET_KEY (sessions, CSRF) and
ENCRYPTION_KEY (every stored secret), made on the first start and kept in
DATA_DIR/instance-keys.json, readable only by the service's user. Imported by the settings,
so it uses nothing of Django.

Losing that file: sessions end (everyone signs in again) and every stored secret —
secrets, parameters made secret, the repository's credentials, sign-in providers' and
notification channels' secrets, two-factor keys — no longer decrypts. A backup does not
hold the key (by design): keep a copy of the file, or set the keys in the environment.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import tempfile
from pathlib import Path

FILE_NAME = "instance-keys.json"


def new_keys() -> dict[str, str]:
    return {
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ENCRYPTION_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
    }


def load_or_create(data_dir: Path) -> tuple[dict[str, str], bool]:
    """The stored keys, made now if there are none; (keys, whether this call made them).

    Made complete in a temporary file and linked into place, so two processes starting at
    once agree on one set and nobody reads half a file."""
    path = data_dir / FILE_NAME
    with contextlib.suppress(FileNotFoundError):
        return json.loads(path.read_text()), False
    data_dir.mkdir(parents=True, exist_ok=True)
    keys = new_keys()
    handle, temporary = tempfile.mkstemp(dir=data_dir, prefix=".instance-keys-")
    try:
        os.fchmod(handle, 0o600)
        with os.fdopen(handle, "w") as file:
            json.dump(keys, file)
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return json.loads(path.read_text()), False  # another process was first
    finally:
        os.unlink(temporary)
    return keys, True
