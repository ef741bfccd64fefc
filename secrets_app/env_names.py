"""Which names a run's environment variables may have, and which are reserved.

A stored variable, the values given for one run (run form, webhook body, `runpipeline -e`)
and pipeline.json's env maps all become environment variables of a run. Names that change
how the run is built, isolated or how it reaches the network are reserved for Fast-Flow:
interpreter and uv settings, the dynamic loader, TLS trust, proxies, netrc.
"""

from __future__ import annotations

import re

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
RESERVED_ENV_PREFIX = "FASTFLOW_"
RESERVED_RUNTIME_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "PWD",
        "SHELL",
        "USER",
        "HOSTNAME",
        # Where traffic goes and whom it trusts: a run value must not redirect a pipeline's
        # requests (and the credentials in them) through another proxy or authority.
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "FTP_PROXY",
        "CURL_CA_BUNDLE",
        "NETRC",
        "NODE_EXTRA_CA_CERTS",
        "GIT_SSL_CAINFO",
        "GIT_SSL_NO_VERIFY",
        "GIT_PROXY_COMMAND",
        "GIT_SSH_COMMAND",
    }
)
RESERVED_RUNTIME_PREFIXES = (
    "PYTHON",
    "UV_",
    "PIP_",
    "LD_",
    "SSL_",
    "REQUESTS_CA",
    "FASTFLOW_",
    "VIRTUAL_ENV",
)


def is_env_name(name: str) -> bool:
    return ENV_NAME.fullmatch(name) is not None


def runtime_env_name_problem(name: str) -> str | None:
    """Why `name` cannot be set for a run from outside the pipeline's code (None: it can).

    Case does not matter: `https_proxy` is read by the same tools as `HTTPS_PROXY`.
    """
    if not is_env_name(name):
        return f"{name!r} is not a variable name (letters, digits and _, not first a digit)"
    upper = name.upper()
    if upper in RESERVED_RUNTIME_NAMES or upper.startswith(RESERVED_RUNTIME_PREFIXES):
        return f"{name} is reserved: it would change how the run is built or where it connects"
    return None
