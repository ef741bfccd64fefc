"""Syncing over SSH for real: an sshd on a loopback port serves the bare repository; the
deploy key is made by Fast-Flow, the host key pinned on first use, a changed host key
refused until an admin forgets the pinned one."""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
from pathlib import Path

import pytest

from pipelines_app import deploy_keys, gitsync
from pipelines_app.models import GitSource, Sync
from runs_app.follow import wait_for
from tests.pipelines_app.test_gitsync import Remote
from tests.runs_app.conftest import free_port, require

pytestmark = pytest.mark.django_db

SSHD = "/usr/sbin/sshd"


class SSHServer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.authorized_keys = root / "authorized_keys"
        self.authorized_keys.touch()
        self.new_host_key()

    def new_host_key(self) -> None:
        key = self.root / "host_key"
        key.unlink(missing_ok=True)
        Path(f"{key}.pub").unlink(missing_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)

    def start(self) -> None:
        config = self.root / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.root / 'host_key'}\n"
            f"AuthorizedKeysFile {self.authorized_keys}\nPidFile {self.root / 'sshd.pid'}\n"
            "StrictModes no\nUsePAM no\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
            "PermitRootLogin prohibit-password\n"
        )
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
        self.process = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.root / "sshd.log", "w"),  # noqa: SIM115
        )

        def listening() -> bool:
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", self.port)) == 0

        assert wait_for(listening, timeout=10), (self.root / "sshd.log").read_text()

    def stop(self) -> None:
        if self.process:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture
def sshd(tmp_path):
    require(os.path.exists(SSHD), "OpenSSH's server (/usr/sbin/sshd)")
    (tmp_path / "ssh").mkdir()
    server = SSHServer(tmp_path / "ssh")
    server.start()
    yield server
    server.stop()


def test_a_deploy_key_syncs_over_ssh_and_the_host_key_is_pinned(sshd, settings, tmp_path):
    settings.DATA_DIR = tmp_path / "data"
    remote = Remote(tmp_path)
    head = remote.commit({"a/main.py": "print(1)\n"}, "over ssh")
    source = GitSource.objects.create(
        url=f"ssh://{getpass.getuser()}@127.0.0.1:{sshd.port}{remote.bare}",
        auth=GitSource.Auth.SSH,
    )
    sshd.authorized_keys.write_text(deploy_keys.generate(source) + "\n")
    source.save()

    record = gitsync.sync(Sync.Trigger.CLI)
    assert record.status == Sync.Status.SUCCEEDED, record.error
    assert record.commit == head
    source.refresh_from_db()
    host_key = (sshd.root / "host_key.pub").read_text().split()[1]
    assert f"[127.0.0.1]:{sshd.port} ssh-ed25519 {host_key}" in source.ssh_known_hosts
    assert not (gitsync.git_dir() / "repo" / ".git" / "config").read_text().count("PRIVATE")

    # The server's host key changes: refused, the live tree stays.
    sshd.stop()
    sshd.new_host_key()
    sshd.start()
    remote.commit({"a/main.py": "print(2)\n"}, "after the host key changed")
    refused = gitsync.sync(Sync.Trigger.CLI)
    assert refused.status == Sync.Status.FAILED
    assert "Host key verification failed" in refused.error, refused.error
    assert gitsync.live_commit() == head

    # An admin forgets the pinned key: the next sync pins the new one.
    GitSource.objects.update(ssh_known_hosts="")
    accepted = gitsync.sync(Sync.Trigger.CLI)
    assert accepted.status == Sync.Status.SUCCEEDED, accepted.error
    assert accepted.commit != head
