"""Settings come from the environment, fail loudly when unsafe, and pick the right database.

Each case imports the settings in a fresh interpreter, as a real start-up would.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

BASE_DIR = Path(settings.BASE_DIR)
FERNET_KEY = "Zm9yLXRlc3RzLW9ubHktMzItYnl0ZXMtbG9uZy1rZXk="  # 32 bytes, url-safe base64


def start(tmp_path, code: str = "", **env_vars: str) -> subprocess.CompletedProcess:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "SECRET_KEY", "ENCRYPTION_KEY", "DEBUG", "REDIS_URL")
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "fastflow_site.settings",
            "DATA_DIR": str(tmp_path / "data"),
            "FASTFLOW_ENV_FILE": str(tmp_path / "no.env"),
            **env_vars,
        }
    )
    script = "import django, json; django.setup(); from django.conf import settings\n" + code
    return subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=BASE_DIR, capture_output=True, text=True
    )


def test_debug_is_off_unless_asked_for(tmp_path):
    result = start(tmp_path, "print(json.dumps(settings.DEBUG))")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) is False


def test_the_first_start_makes_the_keys_and_later_starts_keep_them(tmp_path):
    show = "print(json.dumps([settings.SECRET_KEY, settings.ENCRYPTION_KEYS]))"
    first = start(tmp_path, show)
    assert first.returncode == 0, first.stderr
    keys_file = tmp_path / "data" / "instance-keys.json"
    assert "made this instance's SECRET_KEY and ENCRYPTION_KEY" in first.stderr
    assert oct(keys_file.stat().st_mode & 0o777) == "0o600"
    secret_key, encryption_keys = json.loads(first.stdout.splitlines()[-1])
    assert len(secret_key) >= 50 and len(encryption_keys) == 1
    stored = json.loads(keys_file.read_text())
    assert stored == {"SECRET_KEY": secret_key, "ENCRYPTION_KEY": encryption_keys[0]}
    # A value encrypted on the first start decrypts on the next one, which says nothing.
    token = start(tmp_path, "from secrets_app import crypto; print(crypto.encrypt('kept'))")
    again = start(
        tmp_path,
        f"from secrets_app import crypto; print(crypto.decrypt({token.stdout.split()[-1]!r}))",
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.split()[-1] == "kept" and "made this instance" not in again.stderr


def test_keys_from_the_environment_win_and_the_missing_one_is_made(tmp_path):
    result = start(tmp_path, "print(json.dumps(settings.SECRET_KEY))", SECRET_KEY="s" * 50)
    assert json.loads(result.stdout.splitlines()[-1]) == "s" * 50
    stored = json.loads((tmp_path / "data" / "instance-keys.json").read_text())
    assert stored["ENCRYPTION_KEY"] and stored["SECRET_KEY"] != "s" * 50


def test_a_data_dir_that_cannot_hold_the_keys_stops_with_a_recipe(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    result = start(tmp_path, DATA_DIR=str(tmp_path / "a-file" / "data"))
    assert result.returncode != 0
    assert "cannot be read or made" in result.stderr
    assert "secrets.token_urlsafe(50)" in result.stderr


def test_check_deploy_is_clean_for_production_behind_https(tmp_path):
    env = {
        "DJANGO_SETTINGS_MODULE": "fastflow_site.settings",
        "DATA_DIR": str(tmp_path / "data"),
        "FASTFLOW_ENV_FILE": str(tmp_path / "no.env"),
        "BASE_URL": "https://fastflow.example.com",
        "ALLOWED_HOSTS": "fastflow.example.com",
        "BEHIND_PROXY": "true",
        "PATH": os.environ["PATH"],
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        env=env, cwd=BASE_DIR, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    shown = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import "
         "settings as s; print(s.SECURE_PROXY_SSL_HEADER, s.SECURE_HSTS_SECONDS, "
         "s.SESSION_COOKIE_SECURE, s.SECURE_SSL_REDIRECT)"],
        env=env, cwd=BASE_DIR, capture_output=True, text=True,
    )  # fmt: skip
    assert shown.stdout.split()[-4:] == ["'https')", "31536000", "True", "True"]


def test_debug_off_with_both_keys_starts(tmp_path):
    result = start(
        tmp_path,
        "print(json.dumps([settings.DEBUG, settings.ENCRYPTION_KEYS]))",
        DEBUG="false",
        SECRET_KEY="x" * 50,
        ENCRYPTION_KEY=f"{FERNET_KEY}, {FERNET_KEY}",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [False, [FERNET_KEY, FERNET_KEY]]


def test_a_malformed_encryption_key_is_refused(tmp_path):
    result = start(tmp_path, ENCRYPTION_KEY=f"{FERNET_KEY},not-a-key")
    assert result.returncode != 0
    assert "ENCRYPTION_KEY: key #2 is not a Fernet key" in result.stderr


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("MAX_CONCURRENT_RUNS", "many", "MAX_CONCURRENT_RUNS='many' is not a whole number"),
        ("MAX_CONCURRENT_RUNS", "0", "MAX_CONCURRENT_RUNS=0 must be at least 1"),
        ("PIPELINES_SUBDIR", "../etc", "must stay inside PIPELINES_DIR"),
        ("RUN_HOST_PORTS", "5432,db", "RUN_HOST_PORTS: 'db' is not a TCP port or a range"),
        ("RUN_HOST_PORTS", "9000-8000", "RUN_HOST_PORTS: '9000-8000' is not a TCP port"),
        ("RUN_HOST_PORTS", "70000", "RUN_HOST_PORTS: '70000' is not a TCP port"),
    ],
)
def test_bad_values_name_the_variable(tmp_path, name, value, words):
    result = start(tmp_path, **{name: value})
    assert result.returncode != 0
    assert words in result.stderr


def test_host_ports_runs_may_reach_are_ports_and_ranges(tmp_path):
    code = "print(json.dumps(settings.RUN_HOST_PORTS))"
    result = start(tmp_path, code, RUN_HOST_PORTS=" 5432, 8080-8089 ,")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == ["5432", "8080:8089"]
    result = start(tmp_path, code, RUN_HOST_PORTS="")
    assert json.loads(result.stdout.splitlines()[-1]) == []  # the default: none


def test_defaults(tmp_path):
    result = start(
        tmp_path,
        "print(json.dumps({k: str(getattr(settings, k)) for k in ["
        "'DEBUG', 'PIPELINES_DIR', 'LOGS_DIR', 'UV_CACHE_DIR', 'MAX_CONCURRENT_RUNS', "
        "'CONTAINER_TIMEOUT', 'RETRY_ATTEMPTS', 'GIT_BRANCH', 'AUTO_SYNC_INTERVAL', "
        "'LOG_STREAM_RATE_LIMIT', 'UV_PRE_HEAT', 'WORKER_IMAGE']}))",
    )
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout.splitlines()[-1])
    assert values == {
        "DEBUG": "False",
        "PIPELINES_DIR": str(BASE_DIR / "pipelines"),
        "LOGS_DIR": str(BASE_DIR / "logs"),
        "UV_CACHE_DIR": str(tmp_path / "data" / "uv_cache"),
        "MAX_CONCURRENT_RUNS": "10",
        "CONTAINER_TIMEOUT": "None",
        "RETRY_ATTEMPTS": "0",
        "GIT_BRANCH": "main",
        "AUTO_SYNC_INTERVAL": "None",
        "LOG_STREAM_RATE_LIMIT": "100",
        "UV_PRE_HEAT": "True",
        "WORKER_IMAGE": "fastflow-worker:latest",
    }


def test_sqlite_by_default_in_wal_mode_with_immediate_transactions(tmp_path):
    code = """
from django.db import connection
with connection.cursor() as cursor:
    cursor.execute("PRAGMA journal_mode")
    journal = cursor.fetchone()[0]
    cursor.execute("PRAGMA busy_timeout")
    busy = cursor.fetchone()[0]
print(json.dumps([connection.vendor, str(connection.settings_dict["NAME"]), journal, busy,
                  connection.settings_dict["OPTIONS"]["transaction_mode"]]))
"""
    result = start(tmp_path, code)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        "sqlite",
        str(tmp_path / "data" / "fastflow.sqlite3"),
        "wal",
        20000,
        "IMMEDIATE",
    ]


def test_database_url_selects_postgresql_with_psycopg3(tmp_path):
    code = (
        "from django.db import connection; import psycopg;"
        "print(json.dumps([connection.vendor, connection.settings_dict['NAME'],"
        " psycopg.__version__[0]]))"
    )
    result = start(tmp_path, code, DATABASE_URL="postgres://fast:flow@db.example:5432/fastflow")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == ["postgresql", "fastflow", "3"]


def test_settings_and_keys_come_from_secret_files(tmp_path):
    """Swarm and Compose secrets: NAME_FILE names a file holding NAME's value (a trailing
    newline is no part of a key)."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "secret_key").write_text("k" * 50 + "\n")
    key = "Zm9yIHRlc3Rpbmcgb25seSwgMzIgYnl0ZXMga2V5ISE="  # 32 bytes
    (secrets / "encryption_key").write_text(key + "\n")
    (secrets / "database_url").write_text("postgres://fast:flow@db.example:5432/fromfile")
    code = (
        "print(json.dumps([settings.SECRET_KEY, settings.KEYS_FROM_ENVIRONMENT,"
        " settings.DATABASES['default']['NAME']]))"
    )
    result = start(
        tmp_path,
        code,
        SECRET_KEY_FILE=str(secrets / "secret_key"),
        ENCRYPTION_KEY_FILE=str(secrets / "encryption_key"),
        DATABASE_URL_FILE=str(secrets / "database_url"),
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == ["k" * 50, True, "fromfile"]
    assert not (tmp_path / "data" / "instance-keys.json").exists()


def test_a_dot_env_file_is_read(tmp_path):
    env_file = tmp_path / "custom.env"
    env_file.write_text("MAX_CONCURRENT_RUNS=3\nGIT_BRANCH=prod\n")
    result = start(
        tmp_path,
        "print(settings.MAX_CONCURRENT_RUNS, settings.GIT_BRANCH)",
        FASTFLOW_ENV_FILE=str(env_file),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["3", "prod"]


def env_example_names() -> set[str]:
    text = (BASE_DIR / ".env.example").read_text()
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, re.MULTILINE))


def test_env_example_lists_every_variable_the_settings_read():
    source = (BASE_DIR / "fastflow_site" / "settings.py").read_text()
    read = set(re.findall(r'(?:env(?:\.\w+)?|_path|_int)\(\s*"([A-Z][A-Z0-9_]+)"', source))
    assert len(read) > 30
    assert read - env_example_names() == set()


def test_the_configuration_reference_describes_every_variable():
    source = (BASE_DIR / "fastflow_site" / "settings.py").read_text()
    read = set(re.findall(r'(?:env(?:\.\w+)?|_path|_int)\(\s*"([A-Z][A-Z0-9_]+)"', source))
    reference = (BASE_DIR / "docs" / "configuration.md").read_text()
    assert {name for name in read if f"`{name}" not in reference} == set()


def test_env_example_as_it_is_starts_a_local_instance_without_https(tmp_path):
    """Copied to .env for a local start, it must not send http://localhost to https."""
    result = start(
        tmp_path,
        "print(settings.SECURE_SSL_REDIRECT, settings.SECURE_HSTS_SECONDS, settings.DEBUG)",
        FASTFLOW_ENV_FILE=str(BASE_DIR / ".env.example"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "0", "False"]


def test_every_instance_setting_of_the_pipeline_contract_exists():
    contract = [
        "DATABASE_URL",
        "PIPELINES_DIR",
        "PIPELINES_SUBDIR",
        "LOGS_DIR",
        "DATA_DIR",
        "WORKER_IMAGE",
        "UV_CACHE_DIR",
        "UV_PRE_HEAT",
        "MAX_CONCURRENT_RUNS",
        "CONTAINER_TIMEOUT",
        "RETRY_ATTEMPTS",
        "GIT_REPO_URL",
        "GIT_BRANCH",
        "AUTO_SYNC_INTERVAL",
        "LOG_RETENTION_RUNS",
        "LOG_RETENTION_DAYS",
        "LOG_MAX_SIZE_MB",
        "LOG_STREAM_RATE_LIMIT",
        "ENCRYPTION_KEY",
        "GITHUB_APP_ID",
        "GITHUB_INSTALLATION_ID",
        "GITHUB_PRIVATE_KEY_PATH",
        "INITIAL_ADMIN_EMAIL",
        "GITHUB_CLIENT_ID",
        "GITHUB_CLIENT_SECRET",
        "GOOGLE_CLIENT_ID",
        "GOOGLE_CLIENT_SECRET",
        "BASE_URL",
    ]
    assert set(contract) - env_example_names() == set()
    for name in contract:
        if name not in ("DATABASE_URL", "ENCRYPTION_KEY"):
            assert hasattr(settings, name), name


def test_sign_in_providers_come_from_the_environment(tmp_path):
    result = start(
        tmp_path,
        "from django.core.management import call_command; call_command('migrate', verbosity=0)\n"
        "from allauth.socialaccount.adapter import get_adapter\n"
        "print(json.dumps(sorted((a.provider, a.provider_id, a.client_id, a.settings.get("
        "'server_url', '')) for a in get_adapter().list_apps(None))))",
        GITHUB_CLIENT_ID="gh-id",
        GITHUB_CLIENT_SECRET="gh-secret",
        OIDC_CLIENT_ID="kc-id",
        OIDC_CLIENT_SECRET="kc-secret",
        OIDC_SERVER_URL="https://sso.example.com/realms/main",
        OIDC_PROVIDER_ID="keycloak",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        ["github", "", "gh-id", ""],
        [
            "openid_connect",
            "keycloak",
            "kc-id",
            "https://sso.example.com/realms/main/.well-known/openid-configuration",
        ],
    ]


def test_an_oidc_client_without_its_server_stops_start_up(tmp_path):
    result = start(tmp_path, OIDC_CLIENT_ID="kc-id")
    assert result.returncode != 0 and "OIDC_SERVER_URL" in result.stderr


def test_password_sign_in_off_leaves_providers_only(tmp_path):
    result = start(
        tmp_path,
        "mfa = 'allauth.mfa' in settings.INSTALLED_APPS\n"
        "print(json.dumps([settings.SOCIALACCOUNT_ONLY, mfa]))",
        PASSWORD_LOGIN="false",
        GOOGLE_CLIENT_ID="g-id",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [True, False]
