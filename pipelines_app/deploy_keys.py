"""SSH deploy keys for the pipeline repository: made here, the public half shown to copy
into the repository's settings, the private half stored encrypted; the server's host key
is pinned on first use (StrictHostKeyChecking=accept-new) and kept until an admin resets it."""

from __future__ import annotations

import contextlib
import os
import shlex
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pipelines_app.models import GitSource


def generate(source: GitSource) -> str:
    """A new Ed25519 key pair on `source` (not saved); returns the public key to copy."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    source.set_secret("ssh_private_key", private)
    source.ssh_public_key = f"{public} fast-flow"
    return source.ssh_public_key


@contextlib.contextmanager
def ssh_environment(source: GitSource) -> Iterator[dict[str, str]]:
    """GIT_SSH_COMMAND with the key in a private temporary file; pins the host key."""
    private = source.secret("ssh_private_key")
    if not private:
        raise ValueError("The repository uses an SSH deploy key, and none was made yet.")
    with tempfile.TemporaryDirectory(prefix="fastflow-ssh-") as folder:
        key_file, known_hosts = Path(folder) / "key", Path(folder) / "known_hosts"
        key_file.write_text(private)
        os.chmod(key_file, 0o600)
        known_hosts.write_text(source.ssh_known_hosts)
        command = [
            "ssh",
            "-i",
            str(key_file),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            f"UserKnownHostsFile={known_hosts}",
            "-o",
            "StrictHostKeyChecking=accept-new",
            "-o",
            "HashKnownHosts=no",  # readable in the admin: which host, which key
        ]
        yield {"GIT_SSH_COMMAND": shlex.join(command)}
        pinned = known_hosts.read_text()
        if (
            pinned != source.ssh_known_hosts
            and source.pk
            and GitSource.objects.filter(pk=source.pk).exists()
        ):
            GitSource.objects.filter(pk=source.pk).update(ssh_known_hosts=pinned)
