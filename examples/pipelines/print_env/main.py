"""Prints the environment the run was given: default_env, parameters and (masked) secrets."""

import os

SYSTEM = {"PATH", "HOME", "HOSTNAME", "PWD", "SHLVL", "LANG", "TERM", "_"}
for name in sorted(os.environ):
    if name not in SYSTEM and not name.startswith(("UV_", "VIRTUAL_ENV", "PYTHON", "SSL_")):
        print(f"{name}={os.environ[name]}")
