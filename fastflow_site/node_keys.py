"""Several nodes, one set of keys. A single machine may make its own SECRET_KEY and
ENCRYPTION_KEY (fastflow_site.instance_keys); a second node would make different ones — its
sessions would not be the web's, and the secrets it stores would open nowhere else. So a
worker that finds another live node refuses to start unless both keys come from the
environment, and unless its ENCRYPTION_KEY opens the secrets already stored."""

from __future__ import annotations

from django.conf import settings

from runs_app.models import WorkerNode
from secrets_app.crypto import DecryptionError
from secrets_app.models import Variable


class KeysOfItsOwn(RuntimeError):
    """Why this node may not start with the keys it has."""


def refuse_new_keys_beside_nodes() -> None:
    """`up` (and so a web node's start): keys this start just made, while worker nodes are
    alive, are keys of its own — the instance's are elsewhere."""
    if not settings.KEYS_MADE_NOW:
        return
    alive = sorted(WorkerNode.alive().values_list("name", flat=True))
    if alive:
        raise KeysOfItsOwn(
            f"this start made new keys in {settings.DATA_DIR}/instance-keys.json while worker "
            f"nodes are alive ({', '.join(alive)}): they would not open the instance's "
            "secrets or sessions. Remove that file and set SECRET_KEY and ENCRYPTION_KEY in "
            "the environment, the same as on the other nodes"
        )


def refuse_keys_of_its_own(node_name: str) -> None:
    others = sorted(WorkerNode.alive().exclude(name=node_name).values_list("name", flat=True))
    if not others:
        return  # one node: its own keys are fine
    if not settings.KEYS_FROM_ENVIRONMENT:
        raise KeysOfItsOwn(
            f"another worker node is alive ({', '.join(others)}): with more than one node, "
            "SECRET_KEY and ENCRYPTION_KEY must come from the environment, the same on every "
            "node — this one would use keys of its own "
            f"({settings.DATA_DIR}/instance-keys.json). Copy them from the first node's "
            "environment (or its instance-keys.json) into this node's, then start it again"
        )
    stored = Variable.objects.filter(kind=Variable.Kind.SECRET).first()
    if stored is None:
        return
    try:
        stored.plain_value()
    except DecryptionError:
        raise KeysOfItsOwn(
            f"this node's ENCRYPTION_KEY does not open the secrets the instance stored (the "
            f"secret {stored.name!r} does not decrypt): set the same ENCRYPTION_KEY as on "
            f"the other nodes ({', '.join(others)})"
        ) from None
