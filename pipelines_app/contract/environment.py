"""pipeline.json `environment`: the extras and dependency groups of a uv project, and the
private package indexes a warm-up signs in to.

    "environment": {
        "extras": ["s3"],
        "groups": ["etl"],
        "indexes": [{"url": "https://pypi.example.com/simple", "username": "deploy",
                     "password_secret": "PYPI_TOKEN"}]
    }

An index's password is never in the repository: `password_secret` names a Fast-Flow secret
(global or the pipeline's), which only the warm-up receives.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from pipelines_app.contract.reader import FieldReader, show
from pipelines_app.contract.types import EnvironmentSpec, PackageIndex
from secrets_app.env_names import is_env_name

ENVIRONMENT_KEYS = ("extras", "groups", "indexes")
INDEX_KEYS = ("url", "username", "password_secret")
# PEP 685 extra names and PEP 735 group names, normalised or not.
PACKAGE_WORD = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,62}[A-Za-z0-9])?")


def parse_environment(reader: FieldReader, value: Any) -> EnvironmentSpec | None:
    if not isinstance(value, dict):
        reader.error("environment", f'{show(value)} must be an object, e.g. {{"extras": ["s3"]}}')
        return None
    reader.unknown_keys(value, ENVIRONMENT_KEYS, "environment.")
    return EnvironmentSpec(
        extras=_words(reader, value.get("extras", []), "environment.extras"),
        groups=_words(reader, value.get("groups", []), "environment.groups"),
        indexes=_indexes(reader, value.get("indexes", [])),
    )


def _words(reader: FieldReader, value: Any, path: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        reader.error(path, f'{show(value)} must be a list of names, e.g. ["s3"]')
        return ()
    words: list[str] = []
    for index, item in enumerate(value):
        if not isinstance(item, str) or not PACKAGE_WORD.fullmatch(item):
            reader.error(f"{path}[{index}]", f"{show(item)} is not an extra or group name")
        elif item not in words:
            words.append(item)
    return tuple(words)


def _indexes(reader: FieldReader, value: Any) -> tuple[PackageIndex, ...]:
    if not isinstance(value, list):
        reader.error("environment.indexes", f"{show(value)} must be a list of objects")
        return ()
    indexes: list[PackageIndex] = []
    for number, item in enumerate(value):
        path = f"environment.indexes[{number}]"
        if not isinstance(item, dict):
            reader.error(path, f'{show(item)} must be an object, e.g. {{"url": "https://..."}}')
            continue
        reader.unknown_keys(item, INDEX_KEYS, f"{path}.")
        url = reader.string(item.get("url"), f"{path}.url", allow_empty=False)
        parts = urlsplit(url or "")
        if url is None:
            continue
        if parts.scheme not in ("https", "http") or not parts.hostname:
            reader.error(f"{path}.url", f"{show(url)} is not an http(s) address of an index")
            continue
        if parts.username or parts.password:
            reader.error(
                f"{path}.url",
                "holds credentials: keep the password in a Fast-Flow secret and name it in "
                "password_secret (and the user in username)",
            )
            continue
        username = reader.string(item.get("username", ""), f"{path}.username") or ""
        secret = reader.string(item.get("password_secret", ""), f"{path}.password_secret") or ""
        if secret and not is_env_name(secret):
            reader.error(f"{path}.password_secret", f"{show(secret)} is not a secret's name")
            continue
        if not secret:
            reader.warn(path, "has no password_secret: the warm-up reaches it without signing in")
        indexes.append(PackageIndex(url=url, username=username, password_secret=secret))
    return tuple(indexes)
