"""One settings module for every environment; the environment decides.

Every value comes from an environment variable (or a `.env` file beside
manage.py, which `make run` writes on first start). Names are prefixed by the
app that reads them.
"""

import os
from decimal import Decimal
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.FileAwareEnv(DEBUG=(bool, False))
if (BASE_DIR / ".env").exists():
    env.read_env(str(BASE_DIR / ".env"))  # the real environment wins

# Development defaults keep `make test` and a first `make run` working; the
# deploy check (`manage.py check --deploy`) refuses them in production.
INSECURE_DEFAULT = "insecure-dev-only-change-me"
DEBUG = env("DEBUG")
SECRET_KEY = env("SECRET_KEY", default=INSECURE_DEFAULT)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# Not "daphne": as an app it only takes over `runserver`, and it imports
# Twisted's reactor (34 MB) into every process, uvicorn's included. daphne
# itself still serves gateway.asgi:application (manage.py serve --server daphne).
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # For its templates and static files: the API docs (/v1/docs, /api/docs)
    # then load Swagger from the gateway, not from a CDN (blank offline).
    "ninja",
    "gateway",
    "accounts",
    "billing",
    "proxy",
    "cachestore",
]

# The admin's stack. The /v1 API is served by a second handler built with
# API_MIDDLEWARE instead (see gateway/asgi.py): each of these hops to a thread
# and together they cost 2.6x the CPU of a bare request.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
API_MIDDLEWARE = ["gateway.middleware.request_id_middleware"]
# Paths served by the lean API handler.
API_PATH_PREFIXES = (
    "/v1/",
    "/cache/",
    "/healthz",
    "/readyz",
    "/api/chat",
    "/api/generate",
    "/api/embed",  # and /api/embeddings
    "/api/tags",
    "/api/show",
    "/api/ps",
    "/api/version",
)

ROOT_URLCONF = "gateway.urls"
ASGI_APPLICATION = "gateway.asgi.application"

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
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
_db = DATABASES["default"]
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets readers run beside the usage writer; IMMEDIATE takes the write
    # lock up front, so two writers wait for each other instead of failing
    # with "database is locked" when a read transaction upgrades.
    _db.setdefault("OPTIONS", {}).update(
        timeout=20,
        transaction_mode="IMMEDIATE",
        init_command="PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    )
    # The live-server tests run daphne in a subprocess, so the test database
    # must be a file both processes can open (not SQLite's in-memory default);
    # one per test run, so that two runs never share one.
    _db["TEST"] = {"NAME": str(VAR_DIR / f"test-db-{os.getpid()}.sqlite3")}
elif _db["ENGINE"] == "django.db.backends.postgresql":
    # Persistent connections leak under ASGI (one per request thread); the
    # native pool does not. Celery workers turn the pool off (DATABASE_POOL=0)
    # because Celery closes connections around every task anyway.
    _db["CONN_MAX_AGE"] = 0
    _db["CONN_HEALTH_CHECKS"] = True
    # A cut or hung database answers a first-seen key with a quick 503
    # backend_unavailable rather than after the driver's long default.
    _db.setdefault("OPTIONS", {}).setdefault("connect_timeout", env.int("DATABASE_CONNECT_TIMEOUT", default=3))
    if env.bool("DATABASE_POOL", default=True):
        _db.setdefault("OPTIONS", {})["pool"] = {
            "min_size": env.int("DATABASE_POOL_MIN", default=2),
            "max_size": env.int("DATABASE_POOL_MAX", default=20),
            "timeout": env.float("DATABASE_POOL_TIMEOUT", default=5.0),
        }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# How long a request waits for a cold load (a key never seen, the catalog):
# a hung database is a 503 backend_unavailable after this, not a hang.
DATABASE_LOAD_TIMEOUT_SECONDS = env.float("DATABASE_LOAD_TIMEOUT_SECONDS", default=5.0)

REDIS_URL = env("REDIS_URL", default="")
# Namespaces the gateway's own Redis keys, so deployments (or test runs)
# that share one Redis never read each other's counters.
REDIS_KEY_PREFIX = env("REDIS_KEY_PREFIX", default="gw")
# How long a Redis command (or connecting) may take before the request gets
# 503 backend_unavailable: a cut or hung Redis never hangs a request.
REDIS_TIMEOUT_SECONDS = env.float("REDIS_TIMEOUT_SECONDS", default=1.0)
# With Redis unavailable: "closed" refuses (503 backend_unavailable), "open"
# lets the request through unchecked. Budgets and credit stay closed unless
# told otherwise: an open budget could be overspent during the outage.
# With Redis, each request in flight holds a lease its process renews while
# the request lives: a slot whose release is lost (a Redis blip, a killed
# process) frees itself within this long.
PROXY_INFLIGHT_LEASE_SECONDS = env.float("PROXY_INFLIGHT_LEASE_SECONDS", default=30.0)
# The same for a budget or credit reservation: one whose settlement is lost
# stops counting against the budget within this long.
BILLING_RESERVATION_LEASE_SECONDS = env.float("BILLING_RESERVATION_LEASE_SECONDS", default=30.0)
# With Redis, settlements and in-flight releases ride on the process's next
# script call; when none comes within this long, one call sends them all.
# Until then the finished request still counts (in other processes' eyes).
BILLING_SETTLE_FLUSH_SECONDS = env.float("BILLING_SETTLE_FLUSH_SECONDS", default=0.05)
# With Redis, a busy key's process takes a slice of its rate-limit windows,
# in-flight slots and budgets for this long and admits from it locally
# (proxy.leases); 0: every request asks Redis.
BILLING_LEASE_SECONDS = env.float("BILLING_LEASE_SECONDS", default=1.0)
PROXY_RATELIMIT_ON_BACKEND_FAILURE = env.str("PROXY_RATELIMIT_ON_BACKEND_FAILURE", default="closed")
BILLING_ON_BACKEND_FAILURE = env.str("BILLING_ON_BACKEND_FAILURE", default="closed")
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
GATEWAY_SERVE_STATIC = env.bool("GATEWAY_SERVE_STATIC", default=True)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {"django.request": {"level": "ERROR"}},
}

# --- Channels -----------------------------------------------------------------
CHANNEL_LAYERS = {
    "default": (
        {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [REDIS_URL]}}
        if REDIS_URL
        else {"BACKEND": "channels.layers.InMemoryChannelLayer"}
    )
}

# --- Celery ---------------------------------------------------------------------
# Embedded default: kombu's filesystem transport, so `make run` needs no broker.
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default=REDIS_URL or "filesystem://")
if CELERY_BROKER_URL == "filesystem://":
    _queue_dir = str(VAR_DIR / "celery-queue")
    # kombu expects the folders to exist; creating them here serves the
    # worker, beat and the web process alike.
    (VAR_DIR / "celery-queue").mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": _queue_dir,
        "data_folder_out": _queue_dir,
        "processed_folder": str(VAR_DIR / "celery-processed"),
        "store_processed": False,
        # Without it kombu writes its exchange tables to ./control, in the checkout.
        "control_folder": str(VAR_DIR / "celery-control"),
    }
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# --- Gateway ----------------------------------------------------------------------
# Virtual keys are stored as HMAC-SHA256(pepper, key). Changing the pepper
# invalidates every key, so it is a setting of its own, not SECRET_KEY.
ACCOUNTS_KEY_PEPPER = env("ACCOUNTS_KEY_PEPPER", default=INSECURE_DEFAULT)
# How long an unknown key is remembered as unknown (saves a query per retry storm).
ACCOUNTS_NEGATIVE_CACHE_SECONDS = env.float("ACCOUNTS_NEGATIVE_CACHE_SECONDS", default=5.0)
# How often each process checks whether tenants, keys, routes or prices changed
# in another process (one primary-key read, off the request path).
GATEWAY_CONFIG_POLL_SECONDS = env.float("GATEWAY_CONFIG_POLL_SECONDS", default=2.0)

# Fernet key for provider credentials stored in the database. Derived from
# SECRET_KEY when unset; set it explicitly so SECRET_KEY can rotate.
PROXY_SECRETS_KEY = env("PROXY_SECRETS_KEY", default="")
PROXY_MAX_BODY_BYTES = env.int("PROXY_MAX_BODY_BYTES", default=32 * 1024 * 1024)
# An upstream answer (JSON or a whole stream) larger than this is refused
# (502 upstream_response_too_large) or cut, never held whole.
PROXY_MAX_RESPONSE_BYTES = env.int("PROXY_MAX_RESPONSE_BYTES", default=64 * 1024 * 1024)
# Seconds a client may take to send its whole request body (408 past it):
# a Content-Length longer than what is sent must not hold a request forever.
PROXY_BODY_READ_TIMEOUT = env.float("PROXY_BODY_READ_TIMEOUT", default=60.0)
# uvicorn (as `manage.py serve` runs it): seconds to a request's complete headers from the
# connection or the request's first byte, and an idle keep-alive connection's life.
GATEWAY_HEADER_TIMEOUT = env.float("GATEWAY_HEADER_TIMEOUT", default=10.0)
GATEWAY_KEEP_ALIVE_TIMEOUT = env.int("GATEWAY_KEEP_ALIVE_TIMEOUT", default=5)
# Cache hits to /v1/chat/completions and /v1/embeddings answered before
# Django (gateway.cache_lane); off, they take the full path like the rest.
PROXY_CACHE_LANE = env.bool("PROXY_CACHE_LANE", default=True)
PROXY_CONNECT_TIMEOUT = env.float("PROXY_CONNECT_TIMEOUT", default=10.0)
# Time to the response headers, and the longest silence between two chunks.
PROXY_READ_TIMEOUT = env.float("PROXY_READ_TIMEOUT", default=300.0)
DATA_UPLOAD_MAX_MEMORY_SIZE = PROXY_MAX_BODY_BYTES
# Audio uploads (/v1/audio/transcriptions, /translations; proxy.media): a budget
# reserves an upload's duration as its size at the lowest bitrate below
# (bytes a second; 750 is 6 kbit/s Opus), capped at PROXY_AUDIO_MAX_SECONDS
# when set (0: no cap). When neither the upstream nor the file's header
# says how long it was, it is billed at the nominal bitrate (128 kbit/s).
PROXY_AUDIO_MIN_BYTES_PER_SECOND = env.int("PROXY_AUDIO_MIN_BYTES_PER_SECOND", default=750)
PROXY_AUDIO_MAX_SECONDS = env.int("PROXY_AUDIO_MAX_SECONDS", default=0)
PROXY_AUDIO_NOMINAL_BYTES_PER_SECOND = env.int("PROXY_AUDIO_NOMINAL_BYTES_PER_SECOND", default=16_000)
# Azure OpenAI's api-version when a provider's base URL does not carry one.
AZURE_OPENAI_API_VERSION = env("AZURE_OPENAI_API_VERSION", default="2024-10-21")
# Anthropic requires max_tokens; a chat request translated for an Anthropic
# upstream without one asks for this many.
PROXY_ANTHROPIC_DEFAULT_MAX_TOKENS = env.int("PROXY_ANTHROPIC_DEFAULT_MAX_TOKENS", default=4096)

# The usage meter writes batches every BILLING_METER_FLUSH_SECONDS, or sooner
# when BILLING_METER_BATCH_SIZE events wait. On SIGTERM the server waits up to
# GATEWAY_SHUTDOWN_GRACE_SECONDS for in-flight streams, then flushes.
BILLING_METER_FLUSH_SECONDS = env.float("BILLING_METER_FLUSH_SECONDS", default=1.0)
# Small batches on purpose: the writer shares the process's one core (and
# the GIL) with the event loop, and a 500-event batch (~24 ms of CPU) held
# every request in flight back at once; the p99 at c=64 was twice the p50.
BILLING_METER_BATCH_SIZE = env.int("BILLING_METER_BATCH_SIZE", default=100)
# What a budget reserves for output when neither the request (max_tokens)
# nor the model's price row (max_output_tokens) says.
BILLING_DEFAULT_MAX_OUTPUT_TOKENS = env.int("BILLING_DEFAULT_MAX_OUTPUT_TOKENS", default=4096)
# What a budget reserves for each image, audio or file part of a prompt.
BILLING_MEDIA_PART_MAX_TOKENS = env.int("BILLING_MEDIA_PART_MAX_TOKENS", default=20_000)
# The public LiteLLM pricing file the nightly sync reads (a file path works too).
BILLING_PRICES_URL = env(
    "BILLING_PRICES_URL",
    default="https://raw.githubusercontent.com/BerriAI/litellm/main/model_prices_and_context_window.json",
)
# Raw usage records older than this are pruned (only once rolled up).
BILLING_USAGE_RETENTION_DAYS = env.int("BILLING_USAGE_RETENTION_DAYS", default=90)
# Webhooks (billing.webhooks): a prepaid balance below this raises credit.low;
# each POST waits this long; a delivery is retried after RETRY seconds,
# doubling up to an hour, and given up after MAX_ATTEMPTS.
BILLING_CREDIT_LOW_USD = Decimal(env.str("BILLING_CREDIT_LOW_USD", default="1"))
BILLING_WEBHOOK_TIMEOUT_SECONDS = env.float("BILLING_WEBHOOK_TIMEOUT_SECONDS", default=10.0)
BILLING_WEBHOOK_RETRY_SECONDS = env.float("BILLING_WEBHOOK_RETRY_SECONDS", default=30.0)
BILLING_WEBHOOK_MAX_ATTEMPTS = env.int("BILLING_WEBHOOK_MAX_ATTEMPTS", default=10)
BILLING_WEBHOOK_CACHE_SECONDS = env.float("BILLING_WEBHOOK_CACHE_SECONDS", default=10.0)
# A model without a price, for a key with a budget or prepaid credit:
# "refuse" (400 model_not_priced: a budget is never bypassed), "default"
# (charge the default rates below, USD per million tokens), or "allow"
# (answer at cost 0: the budget does not limit that model).
BILLING_UNPRICED_POLICY = env.str("BILLING_UNPRICED_POLICY", default="refuse")
BILLING_UNPRICED_DEFAULT_INPUT_USD = Decimal(env.str("BILLING_UNPRICED_DEFAULT_INPUT_USD", default="10"))
BILLING_UNPRICED_DEFAULT_OUTPUT_USD = Decimal(env.str("BILLING_UNPRICED_DEFAULT_OUTPUT_USD", default="30"))
BILLING_SPOOL_DIR = Path(env("BILLING_SPOOL_DIR", default=str(VAR_DIR / "usage-spool")))
# Each process's usage journal (billing.journal): every event is written here
# as its request ends, so a SIGKILL loses none. Processes sharing a machine
# share the folder; it must be local disk.
BILLING_JOURNAL_DIR = Path(env("BILLING_JOURNAL_DIR", default=str(VAR_DIR / "usage-journal")))
GATEWAY_SHUTDOWN_GRACE_SECONDS = env.float("GATEWAY_SHUTDOWN_GRACE_SECONDS", default=25.0)
# The last flush at shutdown gets what is left of the grace, but at least
# this long; what the database has not taken by then waits on disk (spool and
# journal) for the next process.
BILLING_SHUTDOWN_FLUSH_MIN_SECONDS = env.float("BILLING_SHUTDOWN_FLUSH_MIN_SECONDS", default=2.0)
# After shutdown, a thread still blocked on a backing service (a query on a
# hung database) gets this long before the process exits without it.
GATEWAY_SHUTDOWN_EXIT_SECONDS = env.float("GATEWAY_SHUTDOWN_EXIT_SECONDS", default=5.0)
# The reconciliation reports a usage event on disk (journal, spool, refused)
# that is older than this and not in the books: the meter and the replays
# should have stored it by then.
BILLING_RECONCILE_UNSTORED_SECONDS = env.int("BILLING_RECONCILE_UNSTORED_SECONDS", default=600)

# The response cache: lifetime for the /cache/... paths when the key has none,
# the in-process LRU in front of the backend, and how long an identical
# request waits for the first one's answer instead of going upstream itself.
CACHESTORE_DEFAULT_TTL_SECONDS = env.int("CACHESTORE_DEFAULT_TTL_SECONDS", default=3600)
CACHESTORE_LRU_MAX_BYTES = env.int("CACHESTORE_LRU_MAX_BYTES", default=64 * 1024 * 1024)
CACHESTORE_SINGLEFLIGHT_WAIT_SECONDS = env.float("CACHESTORE_SINGLEFLIGHT_WAIT_SECONDS", default=120.0)
# The semantic cache (on per tenant or key with a threshold): the gateway's own
# embeddings model that embeds questions (a tenant may name another), how long
# the embedding may take before the request goes on as a miss, how much of the
# question is embedded, and how often each process catches up with vectors
# other processes stored.
CACHESTORE_SEMANTIC_EMBEDDING_MODEL = env.str("CACHESTORE_SEMANTIC_EMBEDDING_MODEL", default="")
CACHESTORE_SEMANTIC_TIMEOUT_SECONDS = env.float("CACHESTORE_SEMANTIC_TIMEOUT_SECONDS", default=5.0)
CACHESTORE_SEMANTIC_QUERY_MAX_CHARS = env.int("CACHESTORE_SEMANTIC_QUERY_MAX_CHARS", default=8000)
CACHESTORE_SEMANTIC_SYNC_SECONDS = env.float("CACHESTORE_SEMANTIC_SYNC_SECONDS", default=1.0)
# Popularity: hits are counted in each process and written every
# CACHESTORE_HITS_FLUSH_SECONDS; a starting process loads the
# CACHESTORE_WARM_ENTRIES most hit entries into its LRU (0: none).
CACHESTORE_HITS_FLUSH_SECONDS = env.float("CACHESTORE_HITS_FLUSH_SECONDS", default=5.0)
CACHESTORE_WARM_ENTRIES = env.int("CACHESTORE_WARM_ENTRIES", default=1000)

# Resilience. A provider's own timeouts win over these; PROXY_READ_TIMEOUT
# stays the default of both read timeouts. Retries (across a route's
# deployments, before the first byte only) count every attempt, the first
# included, and wait base * 2^n seconds with full jitter, at most the max
# (a longer Retry-After moves on to another deployment instead). A deployment
# with FAILURES failures within WINDOW seconds is skipped for COOLDOWN
# seconds, then one probe request decides.
PROXY_FIRST_BYTE_TIMEOUT = env.float("PROXY_FIRST_BYTE_TIMEOUT", default=PROXY_READ_TIMEOUT)
PROXY_IDLE_TIMEOUT = env.float("PROXY_IDLE_TIMEOUT", default=PROXY_READ_TIMEOUT)
PROXY_RETRY_ATTEMPTS = env.int("PROXY_RETRY_ATTEMPTS", default=3)
PROXY_RETRY_ON_STATUS = env("PROXY_RETRY_ON_STATUS", default="429,500,502,503,504")
PROXY_RETRY_BACKOFF_BASE = env.float("PROXY_RETRY_BACKOFF_BASE", default=0.1)
PROXY_RETRY_BACKOFF_MAX = env.float("PROXY_RETRY_BACKOFF_MAX", default=2.0)
PROXY_BREAKER_FAILURES = env.int("PROXY_BREAKER_FAILURES", default=5)
PROXY_BREAKER_WINDOW_SECONDS = env.float("PROXY_BREAKER_WINDOW_SECONDS", default=30.0)
PROXY_BREAKER_COOLDOWN_SECONDS = env.float("PROXY_BREAKER_COOLDOWN_SECONDS", default=30.0)
# Upstream limits per deployment (proxy.capacity): how long a request may
# wait for room when every deployment of its route is at its rpm or tpm,
# before it is refused with 429 upstream_capacity.
PROXY_CAPACITY_WAIT_SECONDS = env.float("PROXY_CAPACITY_WAIT_SECONDS", default=5.0)

# /v1/realtime (proxy.realtime): open sessions per key (0: no limit), the
# longest silence both ways, and the longest session (OpenAI's own is 60 min).
PROXY_REALTIME_MAX_SESSIONS_PER_KEY = env.int("PROXY_REALTIME_MAX_SESSIONS_PER_KEY", default=10)
PROXY_REALTIME_IDLE_TIMEOUT_SECONDS = env.float("PROXY_REALTIME_IDLE_TIMEOUT_SECONDS", default=300.0)
PROXY_REALTIME_MAX_SESSION_SECONDS = env.float("PROXY_REALTIME_MAX_SESSION_SECONDS", default=3600.0)
# Azure serves realtime under preview API versions only.
AZURE_OPENAI_REALTIME_API_VERSION = env("AZURE_OPENAI_REALTIME_API_VERSION", default="2025-04-01-preview")

# --- Operations dashboard: alerts (CHANNEL_LAYERS for its live feed is above) ---
# A deployment is flagged when this share of its requests in the last
# ALERT_WINDOW_MINUTES failed with 401, 404, 429 or 5xx, once it served
# at least ALERT_MIN_REQUESTS (a single failure is not a trend).
ALERT_ERROR_RATE = env.float("ALERT_ERROR_RATE", default=0.2)
ALERT_WINDOW_MINUTES = env.int("ALERT_WINDOW_MINUTES", default=15)
ALERT_MIN_REQUESTS = env.int("ALERT_MIN_REQUESTS", default=20)
# Requests answered by a model without a price (BILLING_UNPRICED_POLICY
# allow or default) over the last ALERT_UNPRICED_WINDOW_HOURS: each is spend
# the books do not see at its real rate.
ALERT_UNPRICED_WINDOW_HOURS = env.int("ALERT_UNPRICED_WINDOW_HOURS", default=24)

# --- Operations: metrics, logs, errors ------------------------------------------
# /metrics (Prometheus). With METRICS_TOKEN set it needs `Authorization:
# Bearer <token>`. Label values beyond these caps are counted as "other".
# With several processes, set PROMETHEUS_MULTIPROC_DIR (see gateway.metrics).
METRICS_TOKEN = env("METRICS_TOKEN", default="")
METRICS_MAX_MODELS = env.int("METRICS_MAX_MODELS", default=500)
METRICS_MAX_TENANTS = env.int("METRICS_MAX_TENANTS", default=1000)
# LOG_FORMAT=json: one JSON object per line with the request id (gateway.kernel.logs).
LOG_FORMAT = env("LOG_FORMAT", default="text")
# Outermost, so every line written while serving a request carries its id.
# (The API handler's request_id_middleware binds the id itself: one layer fewer on the hot path.)
MIDDLEWARE = ["gateway.kernel.logs.request_context_middleware", *MIDDLEWARE]
if LOG_FORMAT == "json":
    from gateway.kernel.logs import json_logging

    LOGGING = json_logging(LOGGING)
    CELERY_WORKER_HIJACK_ROOT_LOGGER = False  # let the worker's lines go through the JSON handler too
SENTRY_DSN = env("SENTRY_DSN", default="")
if SENTRY_DSN:
    import sentry_sdk
    from sentry_sdk.integrations.django import DjangoIntegration

    sentry_sdk.init(
        dsn=SENTRY_DSN,
        integrations=[DjangoIntegration()],
        send_default_pii=False,  # no user data, cookies or request bodies (prompts)
        traces_sample_rate=env.float("SENTRY_TRACES_SAMPLE_RATE", default=0.0),
        environment=env("SENTRY_ENVIRONMENT", default="production"),
    )

# `<provider>/<model>` (and /<provider>/v1/... paths) reaches an active
# provider's model directly when no route, alias or wildcard answers the name.
PROXY_PROVIDER_PREFIX_ROUTING = env.bool("PROXY_PROVIDER_PREFIX_ROUTING", default=True)

# --- Request tracing (proxy.tracing) -----------------------------------------------
# Opt in per tenant or key (`trace_sample_rate`, 0 to 1; the key's wins when
# set). A sampled request's bodies go to JSON Lines files in TRACE_DIR (one
# per UTC day) or to `accounts.RequestTrace` rows (TRACE_SINK=db), secrets
# redacted; each body is cut at TRACE_MAX_BODY_BYTES; a beat task deletes
# traces after TRACE_RETENTION_DAYS. A writer more than TRACE_QUEUE_MAX
# traces behind drops new ones rather than grow.
TRACE_SINK = env("TRACE_SINK", default="file")
if TRACE_SINK not in ("file", "db"):
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(f"TRACE_SINK must be 'file' or 'db', not {TRACE_SINK!r}")
TRACE_DIR = Path(env("TRACE_DIR", default=str(VAR_DIR / "traces")))
TRACE_MAX_BODY_BYTES = env.int("TRACE_MAX_BODY_BYTES", default=256 * 1024)
TRACE_RETENTION_DAYS = env.int("TRACE_RETENTION_DAYS", default=7)
TRACE_QUEUE_MAX = env.int("TRACE_QUEUE_MAX", default=1000)

# --- Responses API state (proxy.responses_state) -------------------------------------
# Responses the gateway translates for providers without the Responses API are
# kept this many days (unless the request says `store: false`), for
# `previous_response_id` and GET/DELETE /v1/responses/{id}; a beat task deletes
# them afterwards.
GATEWAY_RESPONSES_RETENTION_DAYS = env.int("GATEWAY_RESPONSES_RETENTION_DAYS", default=30)

# Smart routers (proxy.routers): the longest wait for a designator's answer
# before the router's fallback answers; how long an identical query to the
# same router reuses its designation (0: never); how much of the query the
# designator reads. descriptions_sync reads OpenRouter's public model list.
PROXY_ROUTER_TIMEOUT_SECONDS = env.float("PROXY_ROUTER_TIMEOUT_SECONDS", default=10.0)
PROXY_ROUTER_CACHE_TTL_SECONDS = env.float("PROXY_ROUTER_CACHE_TTL_SECONDS", default=300.0)
PROXY_ROUTER_QUERY_MAX_CHARS = env.int("PROXY_ROUTER_QUERY_MAX_CHARS", default=4000)
PROXY_DESCRIPTIONS_URL = env("PROXY_DESCRIPTIONS_URL", default="https://openrouter.ai/api/v1/models")

# Augmentors (proxy.augment): the longest wait for the designator's decision
# and how much of the query it reads; the search providers (SearXNG's JSON API;
# Perplexity's OpenAI-compatible chat completions, its base URL overridable for
# tests and proxies) and their bounded wait; scraping's limits (proxy.scrape).
# Scraping refuses hosts that resolve to private, loopback, link-local or
# metadata addresses unless AUGMENT_SCRAPE_ALLOW_PRIVATE (labs, tests).
AUGMENT_DESIGNATOR_TIMEOUT_SECONDS = env.float("AUGMENT_DESIGNATOR_TIMEOUT_SECONDS", default=10.0)
AUGMENT_QUERY_MAX_CHARS = env.int("AUGMENT_QUERY_MAX_CHARS", default=4000)
AUGMENT_SEARXNG_URL = env("AUGMENT_SEARXNG_URL", default="")
PERPLEXITY_API_KEY = env("PERPLEXITY_API_KEY", default="")
AUGMENT_PERPLEXITY_BASE_URL = env("AUGMENT_PERPLEXITY_BASE_URL", default="https://api.perplexity.ai")
AUGMENT_PERPLEXITY_MODEL = env("AUGMENT_PERPLEXITY_MODEL", default="sonar")
AUGMENT_SEARCH_TIMEOUT_SECONDS = env.float("AUGMENT_SEARCH_TIMEOUT_SECONDS", default=10.0)
AUGMENT_SCRAPE_ALLOW_PRIVATE = env.bool("AUGMENT_SCRAPE_ALLOW_PRIVATE", default=False)
AUGMENT_SCRAPE_TIMEOUT_SECONDS = env.float("AUGMENT_SCRAPE_TIMEOUT_SECONDS", default=10.0)
AUGMENT_SCRAPE_MAX_BYTES = env.int("AUGMENT_SCRAPE_MAX_BYTES", default=2 * 1024 * 1024)
AUGMENT_SCRAPE_MAX_REDIRECTS = env.int("AUGMENT_SCRAPE_MAX_REDIRECTS", default=5)
