"""Fast-Flow settings: every value comes from the environment (or a `.env` file).

`.env.example` lists each variable with a one-line explanation. The defaults are safe for
production (DEBUG off); SECRET_KEY and ENCRYPTION_KEY, unless given, are made on the first
start and kept in DATA_DIR (fastflow_site.instance_keys).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import socket
import sys
import warnings
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from fastflow_site import instance_keys, oidc
from pipelines_app.contract.parse import LABEL
from pipelines_app.sizes import parse_size

BASE_DIR = Path(__file__).resolve().parent.parent

# Any variable may come from a file instead: NAME_FILE=/run/secrets/name (Swarm and
# Compose secrets; docs/swarm.md).
env = environ.FileAwareEnv()
_env_file = Path(env.str("FASTFLOW_ENV_FILE", default=str(BASE_DIR / ".env")))
if _env_file.is_file():
    environ.Env.read_env(_env_file)


def _labels(name: str) -> dict[str, str]:
    """`gpu=yes,zone=a` → {"gpu": "yes", "zone": "a"}."""
    labels = {}
    for item in filter(None, (part.strip() for part in env.str(name, default="").split(","))):
        key, _, value = item.partition("=")
        if not (LABEL.fullmatch(key.strip()) and LABEL.fullmatch(value.strip())):
            raise ImproperlyConfigured(
                f"{name}: {item!r} is not a label; write name=value pairs separated by commas, "
                "e.g. gpu=yes,zone=a (letters, digits, '.', '_' and '-')"
            )
        labels[key.strip()] = value.strip()
    return labels


def _path(name: str, default: Path | str) -> Path:
    """A directory setting; relative paths are taken from the project folder, not the cwd."""
    path = Path(env.str(name, default=str(default))).expanduser()
    return path if path.is_absolute() else (BASE_DIR / path).resolve()


def _int(name: str, default: int | None, minimum: int = 0) -> int | None:
    """An integer setting; empty, `none` or `off` means "no value" where the default is None."""
    raw = env.str(name, default="").strip()
    if raw.lower() in ("", "none", "off") and (default is None or raw == ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(
            f"{name}={raw!r} is not a whole number; set e.g. {name}={default or 10}"
        ) from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}")
    return value


def _size(name: str, default: str) -> int:
    """A size setting ("512m", "4g", "2Gi"), in bytes."""
    raw = env.str(name, default=default).strip()
    try:
        return parse_size(raw)
    except ValueError:
        raise ImproperlyConfigured(
            f"{name}={raw!r} is not a size; use e.g. {name}=512m, 4g or 2Gi"
        ) from None


def _ports(name: str) -> list[str]:
    """`5432,47200-47239` → ["5432", "47200:47239"] (iptables' words for a port and a range)."""
    ports = []
    for item in filter(None, (part.strip() for part in env.str(name, default="").split(","))):
        low, dash, high = item.partition("-")
        bounds = [low.strip(), high.strip() if dash else low.strip()]
        if not (
            all(bound.isdigit() and 1 <= int(bound) <= 65535 for bound in bounds)
            and int(bounds[0]) <= int(bounds[1])
        ):
            raise ImproperlyConfigured(
                f"{name}: {item!r} is not a TCP port or a range of them; write e.g. "
                f"{name}=5432,8080-8089"
            )
        first, last = (int(bound) for bound in bounds)
        ports.append(f"{first}:{last}" if dash else str(first))
    return ports


def _cores(name: str, default: float) -> float:
    raw = env.str(name, default=str(default)).strip()
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number of cores; use e.g. 0.5, 1, 2")
    return value


DEBUG = env.bool("DEBUG", default=False)

# --- Where things live ---------------------------------------------------------------------

DATA_DIR = _path("DATA_DIR", "data")
LOGS_DIR = _path("LOGS_DIR", "logs")
PIPELINES_DIR = _path("PIPELINES_DIR", "pipelines")
PIPELINES_SUBDIR = env.str("PIPELINES_SUBDIR", default="").strip("/")
if ".." in Path(PIPELINES_SUBDIR).parts:
    raise ImproperlyConfigured(
        f"PIPELINES_SUBDIR={PIPELINES_SUBDIR!r} must stay inside PIPELINES_DIR"
    )
UV_CACHE_DIR = _path("UV_CACHE_DIR", DATA_DIR / "uv_cache")

# --- Secrets: from the environment, or the instance's own (made on the first start) ---------


def _encryption_keys(raw: str) -> list[str]:
    """Comma-separated Fernet keys, newest first; each must be 32 url-safe base64 bytes."""
    keys = [key.strip() for key in raw.split(",") if key.strip()]
    for position, key in enumerate(keys, start=1):
        try:
            valid = len(base64.urlsafe_b64decode(key.encode())) == 32
        except (binascii.Error, ValueError):
            valid = False
        if not valid:
            raise ImproperlyConfigured(
                f"ENCRYPTION_KEY: key #{position} is not a Fernet key (32 url-safe base64 bytes). "
                "Generate one with\n"
                '  python -c "import base64, os; '
                'print(base64.urlsafe_b64encode(os.urandom(32)).decode())"'
            )
    return keys


SECRET_KEY = env.str("SECRET_KEY", default="").strip()  # a secret file's newline is no key
_encryption_key_text = env.str("ENCRYPTION_KEY", default="").strip()
# Several nodes need the same keys, from the environment (fastflow_site/node_keys.py).
KEYS_FROM_ENVIRONMENT = bool(SECRET_KEY and _encryption_key_text)
KEYS_MADE_NOW = False  # this start made the instance's keys (DATA_DIR/instance-keys.json)
if not SECRET_KEY or not _encryption_key_text:
    try:
        _instance_keys, _made_now = instance_keys.load_or_create(DATA_DIR)
    except (OSError, ValueError) as problem:
        raise ImproperlyConfigured(
            f"SECRET_KEY/ENCRYPTION_KEY are not set and {DATA_DIR / instance_keys.FILE_NAME} "
            f"cannot be read or made ({problem}). Make DATA_DIR writable, or set both:\n"
            '  python -c "import secrets; print(secrets.token_urlsafe(50))"\n'
            '  python -c "import base64, os; '
            'print(base64.urlsafe_b64encode(os.urandom(32)).decode())"'
        ) from None
    KEYS_MADE_NOW = _made_now
    SECRET_KEY = SECRET_KEY or _instance_keys["SECRET_KEY"]
    _encryption_key_text = _encryption_key_text or _instance_keys["ENCRYPTION_KEY"]
    if _made_now:
        print(  # once, on the start that made them
            f"Fast-Flow: made this instance's SECRET_KEY and ENCRYPTION_KEY in "
            f"{DATA_DIR / instance_keys.FILE_NAME} (readable only by you). Keep a copy apart "
            "from your backups: without it stored secrets cannot be decrypted.",
            file=sys.stderr,
        )
ENCRYPTION_KEYS = _encryption_keys(_encryption_key_text)

# --- The instance (docs/configuration.md; the contract's "Settings of the instance") -------

WORKER_IMAGE = env.str("WORKER_IMAGE", default="fastflow-worker:latest")
# Images for pipelines whose python_version names another minor version than
# WORKER_IMAGE's: "3.13=fastflow-worker:py3.13" (build it with
# `SUITE=trixie bash runs_app/worker_image/build-offline.sh fastflow-worker:py3.13`).
PYTHON_IMAGES = env.dict("PYTHON_IMAGES", default={"3.13": "fastflow-worker:py3.13"})
# The minor version of WORKER_IMAGE's Python (the Dockerfile and build-offline.sh: Debian
# bookworm's 3.11): a pipeline's requires-python picks it when it fits, else PYTHON_IMAGES.
WORKER_IMAGE_PYTHON = env.str("WORKER_IMAGE_PYTHON", default="3.11")
EXECUTORS = ("docker", "swarm", "sandbox", "local")
FASTFLOW_EXECUTOR = env.str("FASTFLOW_EXECUTOR", default="docker")
if FASTFLOW_EXECUTOR not in EXECUTORS:
    raise ImproperlyConfigured(
        f"FASTFLOW_EXECUTOR={FASTFLOW_EXECUTOR!r} is not an executor; use "
        + ", ".join(EXECUTORS[:-1])
        + f" or {EXECUTORS[-1]}"
    )
# Executors a pipeline may choose for itself (pipeline.json "executor"), beside
# FASTFLOW_EXECUTOR, which every other pipeline's runs take: "sandbox,docker".
PIPELINE_EXECUTORS = [name.strip() for name in env.list("PIPELINE_EXECUTORS", default=[])]
for _name in PIPELINE_EXECUTORS:
    if _name not in ("docker", "sandbox"):
        raise ImproperlyConfigured(
            f"PIPELINE_EXECUTORS names {_name!r}; a pipeline may choose docker or sandbox"
        )
# The sandbox executor (docs/execution.md): the addresses of its runs' own networks, a /30
# each (the host's end .1, the run's .2). Pick a range no network of this machine uses.
SANDBOX_NETWORK = env.str("SANDBOX_NETWORK", default="10.213.0.0/16")
try:
    if ipaddress.ip_network(SANDBOX_NETWORK).version != 4:
        raise ValueError("an IPv4 range")
    if ipaddress.ip_network(SANDBOX_NETWORK).prefixlen > 28:
        raise ValueError("room for at least three runs: a /28 or larger")
except ValueError as problem:
    raise ImproperlyConfigured(f"SANDBOX_NETWORK={SANDBOX_NETWORK!r}: {problem}") from None
# Where the sandbox unpacks worker images (about 200 MB each; the newest three are kept).
SANDBOX_ROOTS_DIR = (
    _path("SANDBOX_ROOTS_DIR", "")
    if env.str("SANDBOX_ROOTS_DIR", default="")
    else DATA_DIR / "sandbox" / "roots"
)
# The swarm executor (docs/swarm.md): placement constraints every run's service gets, beside
# those of its pipeline's `placement` ("node.role==worker,node.labels.zone==a").
SWARM_CONSTRAINTS = [c.strip() for c in env.list("SWARM_CONSTRAINTS", default=[]) if c.strip()]
UV_PRE_HEAT = env.bool("UV_PRE_HEAT", default=True)
MAX_CONCURRENT_RUNS = _int("MAX_CONCURRENT_RUNS", 10, minimum=1)
# Daemons (restart_on_crash) run in slots of their own, never taking MAX_CONCURRENT_RUNS's.
MAX_DAEMON_RUNS = _int("MAX_DAEMON_RUNS", 5, minimum=0)
# This worker node (docs/nodes.md): its name (one per machine; its processes share it), its
# labels (pipeline.json "placement" picks nodes by them) and how many runs it follows at once.
WORKER_NAME = env.str("WORKER_NAME", default="") or socket.gethostname()
WORKER_LABELS = _labels("WORKER_LABELS")
WORKER_CAPACITY = _int("WORKER_CAPACITY", MAX_CONCURRENT_RUNS + MAX_DAEMON_RUNS, minimum=1)
CONTAINER_TIMEOUT = _int("CONTAINER_TIMEOUT", None, minimum=1)  # seconds; None = no limit
RETRY_ATTEMPTS = _int("RETRY_ATTEMPTS", 0)
GIT_REPO_URL = env.str("GIT_REPO_URL", default="")
GIT_BRANCH = env.str("GIT_BRANCH", default="main")
AUTO_SYNC_INTERVAL = _int("AUTO_SYNC_INTERVAL", None, minimum=10)  # seconds; None = off
# Verifies GitHub's push webhook (X-Hub-Signature-256); the admin can set it too.
GIT_WEBHOOK_SECRET = env.str("GIT_WEBHOOK_SECRET", default="")
# Retention, daily in the worker (runs_app.worker.retention): logs and samples of ended runs older
# than LOG_RETENTION_DAYS or beyond the newest LOG_RETENTION_RUNS per pipeline are removed
# (archived first to BACKUP_DIR when set); run rows go after RUN_RETENTION_DAYS. None = keep.
LOG_RETENTION_RUNS = _int("LOG_RETENTION_RUNS", None, minimum=1)
LOG_RETENTION_DAYS = _int("LOG_RETENTION_DAYS", None, minimum=1)
RUN_RETENTION_DAYS = _int("RUN_RETENTION_DAYS", None, minimum=1)
BACKUP_DIR = _path("BACKUP_DIR", "") if env.str("BACKUP_DIR", default="") else None
LOG_MAX_SIZE_MB = _int("LOG_MAX_SIZE_MB", 50, minimum=1)
# A pipeline folder travels to worker nodes as one bundle of at most this much; a worker
# keeps the bundles it fetched in DATA_DIR/bundles, up to BUNDLE_CACHE_MB (least used go).
BUNDLE_MAX_MB = _int("BUNDLE_MAX_MB", 100, minimum=1)
BUNDLE_CACHE_MB = _int("BUNDLE_CACHE_MB", 2048, minimum=1)
# A run's CPU/memory samples file holds at most this many (older ones thinned; ~60 B each).
METRICS_MAX_SAMPLES = _int("METRICS_MAX_SAMPLES", 20_000, minimum=100)
LOG_STREAM_RATE_LIMIT = _int("LOG_STREAM_RATE_LIMIT", 100, minimum=1)  # lines/s to a browser
GITHUB_APP_ID = env.str("GITHUB_APP_ID", default="")
GITHUB_INSTALLATION_ID = env.str("GITHUB_INSTALLATION_ID", default="")
GITHUB_PRIVATE_KEY_PATH = env.str("GITHUB_PRIVATE_KEY_PATH", default="")
GITHUB_API_URL = env.str("GITHUB_API_URL", default="https://api.github.com")
BASE_URL = env.str("BASE_URL", default="http://localhost:8000").rstrip("/")
REDIS_URL = env.str("REDIS_URL", default="")

# A CA bundle mounted into every run (SSL_CERT_FILE, REQUESTS_CA_BUNDLE point at it), for
# machines behind a TLS-intercepting proxy. Defaults to the orchestrator's own SSL_CERT_FILE.
RUN_CA_BUNDLE = env.str("RUN_CA_BUNDLE", default=env.str("SSL_CERT_FILE", default=""))
RUN_PIDS_LIMIT = _int("RUN_PIDS_LIMIT", 512, minimum=16)
RUN_TMPFS_SIZE_MB = _int("RUN_TMPFS_SIZE_MB", 512, minimum=16)  # each of /tmp and $HOME
# Every run's memory and CPU limits: the default, and the most pipeline.json may ask for.
RUN_MEMORY_LIMIT = _size("RUN_MEMORY_LIMIT", "4g")
RUN_CPU_LIMIT = _cores("RUN_CPU_LIMIT", 2.0)
# The Docker network of run containers (made on first use; containers on it cannot reach
# each other).
RUN_NETWORK = env.str("RUN_NETWORK", default="fastflow-runs")
# TCP ports of this machine's own addresses that runs (Docker's and the sandbox's) may reach,
# e.g. a database or a package index on the host; every other port is refused them
# (runs_app/executors/host_firewall.py).
RUN_HOST_PORTS = _ports("RUN_HOST_PORTS")
# Run containers each worker keeps made and started before their runs exist (0: none; every
# run then waits for its container to be made). One container serves one run, never two.
RUN_POOL_SIZE = _int("RUN_POOL_SIZE", 2, minimum=0)
# The pool follows demand: while runs find it empty it grows (doubling) up to RUN_POOL_MAX,
# and after a minute without runs it shrinks (halving) back to RUN_POOL_SIZE.
RUN_POOL_MAX = max(_int("RUN_POOL_MAX", 8, minimum=0), RUN_POOL_SIZE)
# Seconds a call to the Docker engine may take; log and stats streams have no timeout
# unless DOCKER_STREAM_TIMEOUT sets one (they are opened again when they end early).
DOCKER_API_TIMEOUT = _int("DOCKER_API_TIMEOUT", 30, minimum=1)
DOCKER_STREAM_TIMEOUT = _int("DOCKER_STREAM_TIMEOUT", None, minimum=1)
RUN_STOP_GRACE_SECONDS = _int("RUN_STOP_GRACE_SECONDS", 10, minimum=0)  # SIGTERM, then SIGKILL
RETRY_ON_TIMEOUT = env.bool("RETRY_ON_TIMEOUT", default=False)
# Chaining: a run started by this many runs before it starts no more (a loop A → B → A).
CHAIN_DEPTH_LIMIT = _int("CHAIN_DEPTH_LIMIT", 20, minimum=1)
# A worker that has not shown a sign of life for this long has lost its runs to another.
RUN_HEARTBEAT_TIMEOUT = _int("RUN_HEARTBEAT_TIMEOUT", 30, minimum=5)
# A worker whose loop fails (or is stuck in one turn, or whose thread keeps dying) for this
# long exits with status 3, for its process manager to start it afresh (0: never).
WORKER_UNHEALTHY_EXIT_SECONDS = _int("WORKER_UNHEALTHY_EXIT_SECONDS", 300, minimum=0)

# --- People: sign-in, who may come in, audit, API tokens (fastflow_site) -------------------

INITIAL_ADMIN_EMAIL = env.str("INITIAL_ADMIN_EMAIL", default="")
# Password sign-in for the first admin and small installs; false: providers only.
PASSWORD_LOGIN = env.bool("PASSWORD_LOGIN", default=True)
GITHUB_CLIENT_ID = env.str("GITHUB_CLIENT_ID", default="")
GITHUB_CLIENT_SECRET = env.str("GITHUB_CLIENT_SECRET", default="")
# GitHub Enterprise Server: its address (https://github.example.com); empty for github.com.
GITHUB_URL = env.str("GITHUB_URL", default="").rstrip("/")
GOOGLE_CLIENT_ID = env.str("GOOGLE_CLIENT_ID", default="")
GOOGLE_CLIENT_SECRET = env.str("GOOGLE_CLIENT_SECRET", default="")
OIDC_CLIENT_ID = env.str("OIDC_CLIENT_ID", default="")
OIDC_CLIENT_SECRET = env.str("OIDC_CLIENT_SECRET", default="")
OIDC_SERVER_URL = env.str("OIDC_SERVER_URL", default="")  # the issuer
OIDC_NAME = env.str("OIDC_NAME", default="Single sign-on")
OIDC_PROVIDER_ID = env.str("OIDC_PROVIDER_ID", default="oidc")
# Addresses in these domains (verified by the provider) join as viewers without invitation.
ALLOWED_EMAIL_DOMAINS = env.list("ALLOWED_EMAIL_DOMAINS", default=[])
# Refused people may ask to join; an admin approves (people page) or denies.
JOIN_REQUESTS = env.bool("JOIN_REQUESTS", default=False)
INVITATION_DAYS = _int("INVITATION_DAYS", 7, minimum=1)
AUDIT_RETENTION_DAYS = _int("AUDIT_RETENTION_DAYS", 365, minimum=1)  # None/off: keep all
# Mail (invitations, join requests): e.g. smtp+tls://user:password@mail.example.com:587.
EMAIL_URL = env.str("EMAIL_URL", default="")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Fast-Flow <fastflow@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
if EMAIL_URL:
    vars().update(environ.Env.email_url_config(EMAIL_URL))
MAIL_CONFIGURED = bool(EMAIL_URL)

# --- Operations: notifications, health and metrics --------------------------------------

# The dependency audit asks an OSV-compatible service (the data pip-audit's osv service
# uses) about each pipeline's installed packages, after each warm-up and daily.
VULNERABILITY_API_URL = env.str("VULNERABILITY_API_URL", default="https://api.osv.dev").rstrip("/")
DEPENDENCY_AUDIT = env.bool("DEPENDENCY_AUDIT", default=True)

# Channels for the simple case: apprise URLs, comma-separated (mailto://, slack://, ...),
# told of NOTIFY_EVENTS for every pipeline. More channels and rules: the admin.
NOTIFY_URLS = env.list("NOTIFY_URLS", default=[])
NOTIFY_EVENTS = env.list(
    "NOTIFY_EVENTS",
    default=["failed", "timed_out", "recovered", "crash_loop", "warmup_failed", "cve_found",
             "sync_failed"],
)  # fmt: skip
# A failure keeps failing: told again after this many minutes, then twice as long each time.
NOTIFY_REPEAT_MINUTES = _int("NOTIFY_REPEAT_MINUTES", 10, minimum=1)
NOTIFY_REPEAT_MAX_MINUTES = _int("NOTIFY_REPEAT_MAX_MINUTES", 360, minimum=1)
# A delivery is tried this often (waiting 30 s, 1 min, 2 min, ... between) before giving up.
NOTIFY_MAX_ATTEMPTS = _int("NOTIFY_MAX_ATTEMPTS", 5, minimum=1)

# /metrics answers a bearer token equal to this (or a staff session); empty: staff only.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# /health/ready/ fails when DATA_DIR's or LOGS_DIR's disk has less free space than this.
HEALTH_MIN_FREE_DISK_MB = _int("HEALTH_MIN_FREE_DISK_MB", 1024, minimum=0)

# pipeline.json and requirements files larger than this are refused by discovery.
PIPELINE_CONFIG_MAX_BYTES = _int("PIPELINE_CONFIG_MAX_BYTES", 1024 * 1024, minimum=1024)

# --- Django --------------------------------------------------------------------------------

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[BASE_URL])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "channels",
    "django_htmx",
    "django_q",
    "ninja",
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.github",
    "allauth.socialaccount.providers.google",
    "allauth.socialaccount.providers.openid_connect",
    # Two-factor (TOTP) is for password accounts; allauth has none without passwords.
    *(["allauth.mfa"] if PASSWORD_LOGIN else []),
    "allauth.usersessions",
    "secrets_app",
    "pipelines_app",
    "runs_app",
    "fastflow_site",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",  # static files: compressed by collectstatic
    # Pages and fragments gzip-compressed for browsers that ask (the dashboard's charts shrink
    # about 6 times); with Django's "Heal the BREACH" padding, and CSRF tokens masked per response.
    "django.middleware.gzip.GZipMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Secure by default: every view needs a login unless marked @login_not_required.
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "allauth.usersessions.middleware.UserSessionsMiddleware",
    "fastflow_site.audit.AuditContextMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "fastflow_site.urls"
WSGI_APPLICATION = "fastflow_site.wsgi.application"
ASGI_APPLICATION = "fastflow_site.asgi.application"
# Live logs: without Redis, viewers poll the run's log stored in the database; with Redis,
# workers push lines and status changes through the channel layer and the database fills
# any gap (runs_app/live.py).
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            # channels_redis's layer, waiting out a Redis restart instead of ending viewers.
            "BACKEND": "runs_app.live.RedisChannelLayer",
            "CONFIG": {
                "hosts": [REDIS_URL],
                "prefix": "fastflow-live:",
                # A slow viewer's channel holds this many pushed batches; beyond, it reads
                # the database. Unread batches expire quickly: the stored log is the truth.
                "capacity": 200,
                "expiry": 30,
            },
        }
    }

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "fastflow_site.context_processors.site",
            ],
        },
    },
]

if env.str("DATABASE_URL", default=""):
    DATABASES = {"default": env.db_url("DATABASE_URL")}
else:
    # The embedded default must work on a fresh checkout: make its folder.
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": DATA_DIR / "fastflow.sqlite3"}
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            # Web and worker write to the same file: WAL lets readers go on while one
            # writes, IMMEDIATE makes writers queue (busy timeout) instead of failing
            # with "database is locked" halfway through a transaction.
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
else:
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# django-q2 carries the worker's other tasks — syncs, warm-ups, retention, the audit — to the
# worker's task threads (runs_app.worker.task_threads; runs are followed by threads of their own:
# runs_app.worker.supervisor).
# - timeout None: a warm-up or sync enforces its own limits (q2's timeout would kill it).
# - retry: an unacknowledged task is delivered again after this long (the tasks are
#   idempotent), so a task lost with a dead worker is picked up again.
# - max_attempts 1: failures are handled by our own retries, never by q2.
warnings.filterwarnings(  # about timeout None, which is deliberate (see above)
    "ignore", message="Retry and timeout are misconfigured", category=UserWarning
)
Q_CLUSTER = {
    "name": "fastflow",
    # Threads of the worker process for the tasks: syncs, warm-ups, retention, the audit
    # (runs_app.worker.task_threads; runs are followed by threads of their own:
    # runs_app.worker.supervisor).
    "workers": _int("WORKER_TASK_THREADS", 2, minimum=1),
    "timeout": None,
    "retry": 300,
    "max_attempts": 1,
    "ack_failures": True,
    "save_limit": 200,
    "catch_up": False,
    # How often the ORM broker looks for new tasks (Redis hands them over at once). Runs do
    # not wait for it: their workers are woken (runs_app.wakeup).
    "poll": env.float("WORKER_POLL_SECONDS", default=0.1),
    "label": "Worker tasks",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL

# Webhook calls that start runs, per pipeline per minute (0: no limit). The counters live in
# the cache: per process without Redis (one web process by default), shared with it.
WEBHOOK_RATE_LIMIT = _int("WEBHOOK_RATE_LIMIT", 60)
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "fastflow",
        }
    }
else:
    Q_CLUSTER["orm"] = "default"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
AUTHENTICATION_BACKENDS = ["allauth.account.auth_backends.AuthenticationBackend"]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "account_login"

# django-allauth (docs/people.md): invitation-only sign-up, verified addresses only.
ACCOUNT_ADAPTER = "fastflow_site.accounts.AccountAdapter"
SOCIALACCOUNT_ADAPTER = "fastflow_site.accounts.SocialAccountAdapter"
ACCOUNT_LOGIN_METHODS = {"username", "email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "username*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = "none"  # addresses come verified: by the provider or the invitation
ACCOUNT_LOGOUT_ON_GET = False
ACCOUNT_SESSION_REMEMBER = None
ACCOUNT_PASSWORD_RESET_BY_CODE_ENABLED = False
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = False
ACCOUNT_EMAIL_SUBJECT_PREFIX = "[Fast-Flow] "
# Nothing to reset without mail; and an open mail-sending form is attack surface.
ACCOUNT_PASSWORD_RESET_ENABLED = MAIL_CONFIGURED and PASSWORD_LOGIN
ACCOUNT_RATE_LIMITS = {"login_failed": "10/m/ip,5/5m/key"}
SOCIALACCOUNT_ONLY = not PASSWORD_LOGIN
SOCIALACCOUNT_AUTO_SIGNUP = True
SOCIALACCOUNT_LOGIN_ON_GET = False  # a POST starts a sign-in: no login CSRF
SOCIALACCOUNT_QUERY_EMAIL = True
SOCIALACCOUNT_EMAIL_AUTHENTICATION = True  # a verified address signs in to its account
SOCIALACCOUNT_EMAIL_AUTHENTICATION_AUTO_CONNECT = True
SOCIALACCOUNT_EMAIL_REQUIRED = True
SOCIALACCOUNT_STORE_TOKENS = False
SOCIALACCOUNT_PROVIDERS: dict = {
    "github": {"SCOPE": ["read:user", "user:email"]},
    "google": {"SCOPE": ["profile", "email"], "AUTH_PARAMS": {"prompt": "select_account"}},
    "openid_connect": {},
}
if GITHUB_URL:
    SOCIALACCOUNT_PROVIDERS["github"]["GITHUB_URL"] = GITHUB_URL
if GITHUB_CLIENT_ID:
    SOCIALACCOUNT_PROVIDERS["github"]["APPS"] = [
        {"client_id": GITHUB_CLIENT_ID, "secret": GITHUB_CLIENT_SECRET}
    ]
if GOOGLE_CLIENT_ID:
    SOCIALACCOUNT_PROVIDERS["google"]["APPS"] = [
        {"client_id": GOOGLE_CLIENT_ID, "secret": GOOGLE_CLIENT_SECRET}
    ]
if OIDC_CLIENT_ID:
    if not OIDC_SERVER_URL:
        raise ImproperlyConfigured(
            "OIDC_CLIENT_ID is set but OIDC_SERVER_URL is not: give the issuer, "
            "e.g. OIDC_SERVER_URL=https://sso.example.com/realms/main"
        )
    SOCIALACCOUNT_PROVIDERS["openid_connect"]["APPS"] = [
        {
            "provider_id": OIDC_PROVIDER_ID,
            "name": OIDC_NAME,
            "client_id": OIDC_CLIENT_ID,
            "secret": OIDC_CLIENT_SECRET,
            "settings": {
                "oauth_pkce_enabled": True,
                "server_url": oidc.discovery_url(OIDC_SERVER_URL),
            },
        }
    ]
MFA_ADAPTER = "fastflow_site.mfa.MFAAdapter"
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_TOTP_ISSUER = "Fast-Flow"
USERSESSIONS_TRACK_ACTIVITY = False

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = _path("STATIC_ROOT", "staticfiles")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# The apps' own static files are served even before `collectstatic` (a first start, the
# tests); `up` collects the compressed copies into STATIC_ROOT as well.
WHITENOISE_USE_FINDERS = True

# --- HTTPS (`manage.py check --deploy` is clean with BASE_URL https and BEHIND_PROXY) ------

_https = BASE_URL.startswith("https://")
# A reverse proxy in front terminates TLS and says so in X-Forwarded-Proto; trust that
# header only when one is there (otherwise any client could claim https).
BEHIND_PROXY = env.bool("BEHIND_PROXY", default=False)
if BEHIND_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=_https)
SECURE_REDIRECT_EXEMPT = [r"^health/"]  # load balancers probe over plain HTTP
SECURE_HSTS_SECONDS = _int("SECURE_HSTS_SECONDS", 31_536_000 if _https else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=_https)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=_https)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = _https
CSRF_COOKIE_SECURE = _https
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django": {"level": "INFO", "propagate": True}},
}
