"""Django settings: fixed defaults first, then every environment override in one block.

The defaults are the embedded quick start (SQLite, the in-memory channel layer,
a host agent on localhost); production sets the environment variables below.
"""

import json
import os
import re
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from wrenn import secret_key
from wrenn.rates import parse_rate

BASE_DIR = Path(__file__).resolve().parent.parent

# --- Environment: the only place the process environment is read -------------
_env = os.environ.get


def _env_int(name: str, default: int, low: int = 0, high: int | None = None) -> int:
    """An integer setting from the environment, refused with its name when it is not one or out of range."""
    raw = _env(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ImproperlyConfigured(f"{name} must be {bounds}, got {value}")
    return value


def _env_seconds(name: str, default: float) -> float:
    """A positive number of seconds from the environment, refused with its name otherwise."""
    raw = _env(name, str(default))
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise ImproperlyConfigured(f"{name} must be more than 0 seconds, got {raw}")
    return value


def _env_rate(name: str, default: str) -> str:
    """A rate such as "10/min" (wrenn/rates.py), or "off"; refused with its name when it is neither."""
    raw = _env(name, default)
    try:
        parse_rate(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}: {exc}") from None
    return raw


def _env_origins(name: str) -> list[str]:
    """Comma-separated origins (`scheme://host[:port]`, the host may be `*.domain`)."""
    origins = [o.strip() for o in _env(name, "").split(",") if o.strip()]
    for origin in origins:
        if not origin.startswith(("http://", "https://")):
            raise ImproperlyConfigured(f"{name} entries must start with http:// or https://, got {origin!r}")
    return origins


DEBUG = _env("DJANGO_DEBUG", "0") == "1"
ALLOWED_HOSTS = [h for h in _env("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",") if h]
# Origins besides the server's own whose pages may post forms (Django's CSRF check) and open
# terminals on their session cookie (pty/auth.py): "https://console.example.com,https://*.example.com".
CSRF_TRUSTED_ORIGINS = _env_origins("DJANGO_CSRF_TRUSTED_ORIGINS")
# Raises ImproperlyConfigured on the public development key when the server is reachable from
# other machines (HOST, the run scripts' bind address, or ALLOWED_HOSTS) and DEBUG is off.
SECRET_KEY = secret_key.choose(
    _env("DJANGO_SECRET_KEY", ""),
    _env("DJANGO_SECRET_KEY_FILE", ""),
    debug=DEBUG,
    host=_env("HOST", ""),
    allowed_hosts=ALLOWED_HOSTS,
)
DATA_DIR = Path(_env("WRENN_DATA_DIR", str(BASE_DIR / "var")))
DATABASE_URL = _env("DATABASE_URL", f"sqlite:///{DATA_DIR / 'db.sqlite3'}")
REDIS_URL = _env("REDIS_URL", "")
# With Redis: "redis-pubsub" (default) or "redis-list" (channels_redis.core, which drops past capacity).
CHANNEL_LAYER = _env("WRENN_CHANNEL_LAYER", "redis-pubsub")
CHANNEL_CAPACITY = int(_env("WRENN_CHANNEL_CAPACITY", "1000"))
# Address of the host agent that the demo host (and `manage.py demo`) points at.
HOSTAGENT_ADDR = _env("WRENN_HOSTAGENT_ADDR", "127.0.0.1:50071")
# Token that host agents require on every call (their HOSTAGENT_TOKEN); read
# from WRENN_HOSTAGENT_TOKEN_FILE when set, so it stays out of process listings.
_token_file = _env("WRENN_HOSTAGENT_TOKEN_FILE", "")
HOSTAGENT_TOKEN = Path(_token_file).read_text().strip() if _token_file else _env("WRENN_HOSTAGENT_TOKEN", "")
# Limits of what a team may ask for when it creates a capsule.
WRENN_MAX_VCPUS = int(_env("WRENN_MAX_VCPUS", "8"))
WRENN_MAX_MEMORY_MB = int(_env("WRENN_MAX_MEMORY_MB", "16384"))
WRENN_MAX_TIMEOUT_SEC = int(_env("WRENN_MAX_TIMEOUT_SEC", "86400"))
# What one team's capsules may hold at once, paused ones included (capsules/quotas.py); a team's
# own fields in the admin override each. 0 allows none.
WRENN_TEAM_MAX_CAPSULES = _env_int("WRENN_TEAM_MAX_CAPSULES", 20)
WRENN_TEAM_MAX_VCPUS = _env_int("WRENN_TEAM_MAX_VCPUS", 32)
WRENN_TEAM_MAX_MEMORY_MB = _env_int("WRENN_TEAM_MAX_MEMORY_MB", 32768)
# Percent of each host's memory kept for teams that hold less than that share of the host, so
# that one team cannot take the last of it (capsules/placement.py); 0 turns it off.
WRENN_HOST_HEADROOM_PERCENT = _env_int("WRENN_HOST_HEADROOM_PERCENT", 25, high=50)
# Networks no capsule's policy may open (allow_out), besides loopback and link-local: the
# platform's own (its database, Redis, daphne, host agents), comma-separated CIDRs.
WRENN_NETWORK_NEVER_ALLOW = [c.strip() for c in _env("WRENN_NETWORK_NEVER_ALLOW", "").split(",") if c.strip()]
# A host whose heartbeats stop for this long is unreachable and its capsules missing.
WRENN_HOST_DEAD_AFTER_SEC = float(_env("WRENN_HOST_DEAD_AFTER_SEC", "30"))
# The heartbeat interval the control plane asks host agents for.
WRENN_HOST_HEARTBEAT_INTERVAL_SEC = float(_env("WRENN_HOST_HEARTBEAT_INTERVAL_SEC", "10"))
# Metrics and events (capsules/metrics.py, capsules/live.py): samples follow the heartbeat
# interval. Each capsule's samples are kept this many hours (the metrics' longest range is 24h);
# each team's reservations and daily usage this many days (stats peaks look back 30).
WRENN_METRICS_RETENTION_HOURS = _env_int("WRENN_METRICS_RETENTION_HOURS", 25, low=24)
WRENN_USAGE_RETENTION_DAYS = _env_int("WRENN_USAGE_RETENTION_DAYS", 93, low=30)
# Seconds between the keepalive comments of an idle event stream, so that proxies keep it open.
WRENN_EVENTS_KEEPALIVE_SEC = _env_seconds("WRENN_EVENTS_KEEPALIVE_SEC", 15)
# Deadline of calls to host agents: lifecycle (create, pause, resume, destroy), and a terminal
# socket's input, resize and kill.
HOSTAGENT_RPC_TIMEOUT = float(_env("WRENN_HOSTAGENT_RPC_TIMEOUT", "10"))
# File uploads (docs/api.md, "Files"): the largest file `files/write` and `files/stream/write`
# take, in bytes; beyond it they answer 413. Both stream with bounded memory; daphne spools the
# request body to a temporary file first, so these also bound the disk an upload takes there.
FILES_WRITE_MAX_BYTES = _env_int("WRENN_FILES_WRITE_MAX_BYTES", 104857600, low=1)  # 100 MiB
FILES_STREAM_WRITE_MAX_BYTES = _env_int("WRENN_FILES_STREAM_WRITE_MAX_BYTES", 10737418240, low=1)  # 10 GiB
# Terminal sockets: keepalive ping, and how often activity is written per connection.
PTY_KEEPALIVE_SECONDS = float(_env("WRENN_PTY_KEEPALIVE_SECONDS", "30"))
PTY_ACTIVITY_INTERVAL_SECONDS = float(_env("WRENN_PTY_ACTIVITY_INTERVAL_SECONDS", "30"))
# A client that states no dialect has its output held until its first input shows it, for at
# most this long; then the default dialect applies (docs/protocol.md, "Choosing a dialect").
PTY_DIALECT_WAIT_MS = _env_int("WRENN_PTY_DIALECT_WAIT_MS", 1000, high=60_000)
PTY_DEFAULT_DIALECT = _env("WRENN_PTY_DEFAULT_DIALECT", "json")
if PTY_DEFAULT_DIALECT not in ("json", "raw", "binary"):
    raise ImproperlyConfigured(
        f"WRENN_PTY_DEFAULT_DIALECT must be json, raw or binary, got {PTY_DEFAULT_DIALECT!r}"
    )
# Seconds an authenticated socket has to send `start` or `connect` before it is closed.
PTY_FIRST_FRAME_TIMEOUT_SECONDS = float(_env("WRENN_PTY_FIRST_FRAME_TIMEOUT_SECONDS", "10"))
# Off when empty: SIGUSR1 makes a worker write a JSON snapshot of its asyncio tasks and memory
# to this file, "{pid}" standing for its process id (wrenn/diagnostics.py).
DIAGNOSTICS_FILE = _env("WRENN_DIAGNOSTICS_FILE", "")
# How often an open terminal socket checks that its credentials still hold (pty/credentials.py):
# a revoked key, a user removed from the team or deactivated, an expired token or an ended session
# closes it within this many seconds.
PTY_CREDENTIAL_CHECK_SECONDS = _env_seconds("WRENN_PTY_CREDENTIAL_CHECK_SECONDS", 5.0)
# Terminal sessions one capsule may have open at once (capsules.terminals.live_sessions counts them).
PTY_MAX_SESSIONS_PER_CAPSULE = _env_int("WRENN_PTY_MAX_SESSIONS_PER_CAPSULE", 32, low=1)
# Exec (capsules/processes.py): the bytes of each stream a foreground command's answer keeps (its
# last bytes; the answer says how many came before), and the longest timeout_sec it may ask for.
WRENN_EXEC_OUTPUT_LIMIT_BYTES = _env_int("WRENN_EXEC_OUTPUT_LIMIT_BYTES", 1048576, low=1)
WRENN_EXEC_MAX_TIMEOUT_SECONDS = _env_int("WRENN_EXEC_MAX_TIMEOUT_SECONDS", 3600, low=1)
# Bytes a WebSocket may hold unsent in daphne, and in the kernel (SO_SNDBUF; the kernel doubles
# it), before a terminal stops relaying to that client; 0 (the default) keeps Twisted's 64 KiB
# and the kernel's own sizing. See wrenn/flow.py and docs/protocol.md ("Flow control").
WS_SEND_BUFFER = int(_env("WRENN_WS_SEND_BUFFER", "0"))
# Sign-in limits (capsules/ratelimit.py), "count/period" or "off": password attempts (POST
# /v1/auth/login, /v1/auth/token and the admin's login page) per account and per client address,
# and token refreshes per client address. Past one, the API answers 429 with Retry-After.
WRENN_LOGIN_RATE = _env_rate("WRENN_LOGIN_RATE", "10/min")
WRENN_LOGIN_ADDRESS_RATE = _env_rate("WRENN_LOGIN_ADDRESS_RATE", "30/min")
WRENN_TOKEN_REFRESH_RATE = _env_rate("WRENN_TOKEN_REFRESH_RATE", "60/min")
# Refused authentications recorded on the audit trail per client address (audit/signins.py).
WRENN_AUDIT_AUTH_FAILURE_RATE = _env_rate("WRENN_AUDIT_AUTH_FAILURE_RATE", "60/min")
# What the cache's keys start with; one Redis may hold several deployments' caches, each with its
# own database, so by default the database's name.
CACHE_KEY_PREFIX = _env("WRENN_CACHE_KEY_PREFIX", "")
# Seconds a database connection is kept for reuse (0: one per request).
DB_CONN_MAX_AGE = int(_env("WRENN_DB_CONN_MAX_AGE", "60"))
LOG_LEVEL = _env("WRENN_LOG_LEVEL", "INFO")
# Previews (previews/): `{port}-{capsule_id}.<this>` is proxied into that port of the capsule.
# A host name, with a port to match only that port ("preview.example.com", "localhost:8000");
# without one, any port matches. Browsers resolve every `*.localhost` to loopback, so the
# default works for `make run` (docs/operations.md).
WRENN_PREVIEW_DOMAIN = _env("WRENN_PREVIEW_DOMAIN", "localhost").strip().lower()
if not re.fullmatch(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?", WRENN_PREVIEW_DOMAIN):
    raise ImproperlyConfigured(
        f"WRENN_PREVIEW_DOMAIN must be a host name with an optional :port, got {WRENN_PREVIEW_DOMAIN!r}"
    )
# The longest life a preview link may be given (`expires_in`), and the one it gets by default.
WRENN_PREVIEW_LINK_MAX_SECONDS = _env_int("WRENN_PREVIEW_LINK_MAX_SECONDS", 604800, low=60)
WRENN_PREVIEW_LINK_DEFAULT_SECONDS = _env_int("WRENN_PREVIEW_LINK_DEFAULT_SECONDS", 3600, low=60)
# How often an open preview WebSocket checks that what let it in (a key, a token, a session, a
# link, a public port) still holds: a revoked or expired one closes it within this many seconds.
WRENN_PREVIEW_CREDENTIAL_CHECK_SECONDS = _env_seconds("WRENN_PREVIEW_CREDENTIAL_CHECK_SECONDS", 5.0)
# Share links (shares/): the longest life a link into a terminal session may be given
# (`expires_in`), and the one it gets by default.
WRENN_SHARE_LINK_MAX_SECONDS = _env_int("WRENN_SHARE_LINK_MAX_SECONDS", 86400, low=60)
WRENN_SHARE_LINK_DEFAULT_SECONDS = _env_int("WRENN_SHARE_LINK_DEFAULT_SECONDS", 3600, low=60)
# Seconds a terminal viewer stays in its session's roster (pty/roster.py) without renewing its
# entry (it renews every third of this): the viewers of a worker that died drop out after it.
PTY_ROSTER_TTL_SECONDS = _env_seconds("WRENN_PTY_ROSTER_TTL_SECONDS", 30.0)
# Terminal recordings (recordings/): the storage class their files go to and its options (JSON),
# so production can keep them in an object store without a code change; the file system under
# the data directory by default.
WRENN_RECORDINGS_STORAGE = _env("WRENN_RECORDINGS_STORAGE", "django.core.files.storage.FileSystemStorage")
_recordings_options = _env("WRENN_RECORDINGS_STORAGE_OPTIONS", "")
try:
    WRENN_RECORDINGS_STORAGE_OPTIONS = json.loads(_recordings_options) if _recordings_options else {}
except json.JSONDecodeError as _exc:
    raise ImproperlyConfigured(f"WRENN_RECORDINGS_STORAGE_OPTIONS must be a JSON object: {_exc}") from None
if not isinstance(WRENN_RECORDINGS_STORAGE_OPTIONS, dict):
    raise ImproperlyConfigured("WRENN_RECORDINGS_STORAGE_OPTIONS must be a JSON object")
if WRENN_RECORDINGS_STORAGE == "django.core.files.storage.FileSystemStorage":
    WRENN_RECORDINGS_STORAGE_OPTIONS.setdefault("location", str(DATA_DIR / "recordings"))
# A recording stops (with a marker, and marked truncated) before it grows past this many bytes;
# recordings are deleted this many days after they start, unless the team set its own period.
WRENN_RECORDING_MAX_BYTES = _env_int("WRENN_RECORDING_MAX_BYTES", 67108864, low=4096)
WRENN_RECORDING_RETENTION_DAYS = _env_int("WRENN_RECORDING_RETENTION_DAYS", 30, low=1)
# ------------------------------------------------------------------------------

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "drf_spectacular",
    "capsules",
    "pty",
    "previews",
    "recordings",
    "audit",
    "home",
    "shares",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "wrenn.urls"
ASGI_APPLICATION = "wrenn.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Connections are kept (and checked before reuse): a terminal records activity and viewers
# through database_sync_to_async, and opening a PostgreSQL connection for each of those calls
# would weigh on every busy terminal (figures: docs/performance.md).
DATABASES = {
    "default": dj_database_url.parse(DATABASE_URL, conn_max_age=DB_CONN_MAX_AGE, conn_health_checks=True)
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded default shares one SQLite file between daphne's threads, the monitor and
    # the host agent's heartbeats; many terminals opening at once otherwise fail sockets with
    # "database is locked". WAL lets reads go on during a write; a transaction takes the write
    # lock when it begins (no deadlock upgrading a read lock); a write waits up to 20 s for it.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }

if REDIS_URL and CHANNEL_LAYER == "redis-list":
    # The list-based layer drops messages silently past `capacity` per channel;
    # terminal viewers detect the gaps by offset and fill them from the host agent.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "capacity": CHANNEL_CAPACITY},
        }
    }
elif REDIS_URL:
    # The pub/sub layer neither drops a channel's messages at a fixed capacity
    # nor polls lists; docs/performance.md has the figures behind the choice.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
else:
    # One process only. A full channel drops messages silently; viewers repair
    # such gaps from the host agent, and 1,000 keeps repairs rare.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": CHANNEL_CAPACITY},
        }
    }

# The cache holds the sign-in counts (capsules/ratelimit.py): with Redis every worker shares them;
# without it (one process, `make run`) they live in the process's memory.
_cache_prefix = CACHE_KEY_PREFIX or f"wrenn:{DATABASES['default']['NAME']}"
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": _cache_prefix,
        }
    }
else:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "KEY_PREFIX": _cache_prefix}
    }

# Terminal sockets, beside the two intervals above: how long a socket without credentials has to
# send its `auth` frame, and how often a session's leader counts its viewers (it publishes output
# through the channel layer only while someone else watches; see pty/presence.py).
PTY_AUTH_TIMEOUT_SECONDS = 5.0
PTY_VIEWER_COUNT_SECONDS = 1.0

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = DATA_DIR / "static"
# xterm.js and the asciinema player come from npm (`npm ci` in the set-up command) and are served as-is.
STATICFILES_DIRS = [
    ("xterm", BASE_DIR / "node_modules" / "@xterm" / "xterm"),
    ("xterm-addon-fit", BASE_DIR / "node_modules" / "@xterm" / "addon-fit"),
    ("asciinema-player", BASE_DIR / "node_modules" / "asciinema-player" / "dist" / "bundle"),
]

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "recordings": {"BACKEND": WRENN_RECORDINGS_STORAGE, "OPTIONS": WRENN_RECORDINGS_STORAGE_OPTIONS},
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# The people's login (home/auth.py) admits every active user; the admin's admits staff only.
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# The API's own views set these too; the defaults make any other DRF view behave the same.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "capsules.api.authentication.APIKeyAuthentication",
        "capsules.api.authentication.TeamJWTAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["capsules.api.authentication.IsTeamCaller"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "capsules.api.errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Wrenn control plane API",
    "DESCRIPTION": (
        "Capsules, API keys and sign-in. Every path is served under /v1/ and, as the public "
        "deployment does, under /api/v1/. Errors are always "
        '{"error": {"code": ..., "message": ...}}.'
    ),
    "VERSION": "1",
    # 3.1: its schemas are JSON Schema 2020-12, so responses can be checked against them as they are.
    "OAS_VERSION": "3.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/v1",
    "SERVERS": [
        {"url": "/", "description": "This deployment"},
        {"url": "/api", "description": "The same API under the /api prefix"},
    ],
    "PREPROCESSING_HOOKS": ["capsules.api.schema.only_v1_paths"],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "capsules.api.schema.close_objects",
        "capsules.api.schema.add_host_token_scheme",
        "capsules.api.schema.add_event_stream",
        "capsules.api.schema.add_scope_refusals",
    ],
    "ENUM_NAME_OVERRIDES": {"CapsuleStatusEnum": "capsules.models.Sandbox.Status"},
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=15),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=7),
    "SIGNING_KEY": SECRET_KEY,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
}
