"""Settings shared by every runtime shape. Everything deployment-specific comes from the environment;
every variable read here is documented in deploy/.env.example (a test checks it)."""

from datetime import timedelta
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent.parent
env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False) if (BASE_DIR / ".env").exists() else None

VAR_DIR = Path(env("HITL_VAR_DIR", default=str(BASE_DIR / "var")))

SECRET_KEY = env("SECRET_KEY", default="")
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",  # API tokens: SHA-512 digests at rest, with expiry (replaced rest_framework.authtoken)
    "axes",  # login lockout per user and per IP, in the database (shared by every process)
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "hitl.core",
    "annotations",
    "workers",
    "hitl.demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "hitl.core.unavailable.ServiceUnavailableMiddleware",  # a lost database: 503 + Retry-After, not 500
    # Last, as axes asks: turns a login refused by the lockout into the lockout page / JSON error.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "hitl.urls"
WSGI_APPLICATION = "hitl.wsgi.application"
ASGI_APPLICATION = "hitl.asgi.application"

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
            ]
        },
    }
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'hitl.sqlite3'}")}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # One writer at a time, waiting instead of failing: the web server and the worker share the file.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 30, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# Argon2 first; existing PBKDF2 hashes still verify and are re-hashed with Argon2 at the next login.
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
]
# The axes backend first: it refuses a locked-out user or IP before any password is hashed.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = Path(env("STATIC_ROOT", default=str(VAR_DIR / "static")))
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(env("MEDIA_ROOT", default=str(VAR_DIR / "media")))
STORAGES = {
    "default": {
        "BACKEND": env("HITL_STORAGE_BACKEND", default="hitl.core.filesystem.AtomicFileSystemStorage")
    },
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# S3-compatible storage (django-storages) when HITL_STORAGE_BACKEND=storages.backends.s3.S3Storage
AWS_STORAGE_BUCKET_NAME = env("AWS_STORAGE_BUCKET_NAME", default="")
AWS_S3_ENDPOINT_URL = env("AWS_S3_ENDPOINT_URL", default=None)
AWS_DEFAULT_ACL = None
AWS_QUERYSTRING_AUTH = True

# Uploads: the API refuses anything larger than this (413) before parsing it. Parsing happens off the web
# process, in a child of the ingest worker under a hard memory limit (workers/ml/imaging/sandbox.py).
HITL_MAX_UPLOAD_BYTES = env.int("HITL_MAX_UPLOAD_BYTES", default=512 * 1024 * 1024)
HITL_MAX_UNCOMPRESSED_BYTES = env.int("HITL_MAX_UNCOMPRESSED_BYTES", default=2 * 1024 * 1024 * 1024)
HITL_IMPORT_MAX_FILES = env.int("HITL_IMPORT_MAX_FILES", default=16)  # files in one upload
HITL_INGEST_MAX_VOXELS = env.int("HITL_INGEST_MAX_VOXELS", default=1 << 27)  # per import (512x512x512)
HITL_INGEST_MAX_SLICE_PIXELS = env.int("HITL_INGEST_MAX_SLICE_PIXELS", default=1 << 26)  # 8192 x 8192
HITL_INGEST_MEMORY_BYTES = env.int("HITL_INGEST_MEMORY_BYTES", default=4 * 1024 * 1024 * 1024)
HITL_INGEST_TIMEOUT_SECONDS = env.int("HITL_INGEST_TIMEOUT_SECONDS", default=600)  # per file
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440  # larger uploads stream to a temporary file, not the heap
FILE_UPLOAD_HANDLERS = [
    "hitl.core.apis.uploads.UploadSizeGuard",  # stops a file at HITL_MAX_UPLOAD_BYTES, before the disk
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]
FILE_UPLOAD_TEMP_DIR = None

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: its WWW-Authenticate header turns "not logged in" into 401 rather than 403.
        "annotations.apis.authentication.TokenAuthentication",  # knox's hashed, expiring tokens
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "hitl.core.apis.pagination.Pagination",
    # JSON bodies only (uploads declare multipart themselves): form encodings cannot say what a list is.
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "hitl.core.apis.schema.AutoSchema",
    "EXCEPTION_HANDLER": "hitl.core.apis.errors.exception_handler",
    "DEFAULT_THROTTLE_RATES": {"login": "20/min"},
}
# API tokens (knox): `Authorization: Token <key>`; the database keeps a SHA-512 digest, never the key.
REST_KNOX = {
    "TOKEN_TTL": timedelta(hours=env.int("HITL_TOKEN_TTL_HOURS", default=24)),
    "AUTH_HEADER_PREFIX": "Token",
    "AUTO_REFRESH": False,
}

# Login lockout (django-axes) on the login page, the admin login and POST /api/v1/auth/token. State lives in
# the database (AccessAttempt rows), so every web process and machine sees the same counts; the embedded
# SQLite run included. HITL_LOGIN_FAILURE_LIMIT failures for one username (from any address) OR from one
# client IP (for any usernames) lock that username / that IP for HITL_LOGIN_COOLOFF_MINUTES after the last
# failure; a locked attempt is refused with 429 before the password is checked and counts as one more
# failure. `manage.py axes_reset_username NAME` / `axes_reset_ip IP` unlock early.
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
AXES_FAILURE_LIMIT = env.int("HITL_LOGIN_FAILURE_LIMIT", default=10)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("HITL_LOGIN_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_HTTP_RESPONSE_CODE = 429
AXES_LOCKOUT_CALLABLE = "annotations.auth_guard.lockout_response"
AXES_CLIENT_IP_CALLABLE = "annotations.auth_guard.client_ip"
# A success must not wipe the failures: one's own valid login would otherwise reset the IP's count.
AXES_RESET_ON_SUCCESS = False
# Logins and logouts are in our AuditEvent trail already; axes' AccessLog would also create a session row
# for every API token login.
AXES_DISABLE_ACCESS_LOG = True
AXES_VERBOSE = False  # no banner on every manage.py command; failures and lockouts are still logged
# Reverse proxies in front of the web server (0: clients connect directly; REMOTE_ADDR is the client). With
# N > 0 the client is the N-th address from the right of X-Forwarded-For, which those proxies append.
HITL_TRUSTED_PROXY_COUNT = env.int("HITL_TRUSTED_PROXY_COUNT", default=0)

SPECTACULAR_SETTINGS = {
    "TITLE": "HITL segmentation API",
    "DESCRIPTION": "Active-learning annotation service for medical image segmentation.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],  # schema and docs: members only
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "ImageStatusEnum": "annotations.models.image.ImageStatus",
        "ImportStatusEnum": "annotations.models.imports.ImportStatus",
        "ImportFileStatusEnum": "annotations.models.imports.IMPORT_FILE_STATUSES",
        "ExplanationMethodEnum": "workers.ml.explain.policy.ALL_METHODS",
        "AssignmentStatusEnum": "annotations.models.queue.AssignmentStatus",
        "RunStatusEnum": "workers.models.modeling.RunStatus",
        "VersionStateEnum": "workers.models.modeling.VersionState",
        "ExplanationRequestStatusEnum": "workers.services.explain_on_demand.OUTCOMES",
        "ExplanationReportStatusEnum": "workers.models.explain_report.ReportStatus",
    },
}

# Celery: the embedded default needs no server (kombu filesystem transport); production sets Redis.
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="filesystem://")
CELERY_BROKER_DIR = Path(env("CELERY_BROKER_DIR", default=str(VAR_DIR / "broker")))
if CELERY_BROKER_URL.startswith("filesystem://"):
    # kombu's filesystem transport expects these folders to exist; hitl/celery.py makes them when Celery
    # loads this configuration (importing settings has no side effects).
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_BROKER_DIR / "queue"),
        "data_folder_out": str(CELERY_BROKER_DIR / "queue"),
        "processed_folder": str(CELERY_BROKER_DIR / "processed"),
        "control_folder": str(CELERY_BROKER_DIR / "control"),
        "store_processed": False,
    }
else:
    # Redis: a task whose worker died (acks_late: never acknowledged) goes back to its queue after this many
    # seconds, so a restarted worker runs it. Every task is idempotent: a copy of a task still running
    # (training, an export, a report) finds it claimed and does nothing.
    # kombu looks for such messages every unacked_restore_interval s but scans Redis only on every
    # unacked_restore_throttle-th look (defaults 10 x 10: a redelivery waited up to 100 s beyond the
    # timeout); here every look scans (one ZRANGE), at most every 10 s. The scan runs under a Redis mutex
    # that kombu keeps for up to 300 s when its holder dies mid-scan (a kill -9): no longer than the
    # visibility timeout here (a scan takes milliseconds; a copy restored twice is harmless, as above).
    _VISIBILITY_S = env.int("HITL_BROKER_VISIBILITY_SECONDS", default=900)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": _VISIBILITY_S,
        "unacked_restore_interval": max(1, min(10, _VISIBILITY_S)),
        "unacked_restore_throttle": 1,
        "unacked_mutex_expire": max(1, min(300, _VISIBILITY_S)),
    }
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True  # state lives in our own rows, not in a result backend
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# a worker child whose resident memory passed this is replaced after its task (a safety net; 0 = never)
CELERY_WORKER_MAX_MEMORY_PER_CHILD = env.int("HITL_WORKER_MAX_MEMORY_MB", default=4096) * 1024 or None
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=3600)  # tasks may set a shorter one
CELERY_TASK_ROUTES = {
    "workers.tasks.ingest.import_jobs_reap": {"queue": "default"},
    "workers.tasks.ingest.*": {"queue": "ingest"},  # parsing untrusted uploads, in sandboxed children
    "workers.tasks.imaging.*": {"queue": "default"},
    "workers.tasks.system.*": {"queue": "default"},
    "annotations.tasks.*": {"queue": "default"},
    "hitl.core.tasks.*": {"queue": "default"},
    # housekeeping must not wait for a (possibly dead) training worker
    "workers.tasks.training.training_runs_reap": {"queue": "default"},
    "workers.tasks.training.training_auto_check": {"queue": "default"},
    "workers.tasks.training.*": {"queue": "train"},
    "workers.tasks.scoring.*": {"queue": "score"},
    "workers.tasks.explain.explanation_reports_reap": {"queue": "default"},
    "workers.tasks.explain.*": {"queue": "explain"},
    "workers.tasks.export.exports_reap": {"queue": "default"},  # never behind a (possibly dead) export
    "workers.tasks.export.*": {"queue": "export"},
    "workers.tasks.agreement.*": {"queue": "default"},
}
# Periodic work (run `celery -A hitl beat`; the embedded run command starts the worker with -B).
CELERY_BEAT_SCHEDULE = {
    "expire-leases": {"task": "annotations.tasks.leases_expire", "schedule": 30.0},
    "sweep-outbox": {"task": "hitl.core.tasks.outbox_sweep", "schedule": 15.0},
    "reap-dead-training-runs": {"task": "workers.tasks.training.training_runs_reap", "schedule": 60.0},
    "expire-exports": {"task": "workers.tasks.export.exports_expire", "schedule": 3600.0},
    "reap-lost-exports": {"task": "workers.tasks.export.exports_reap", "schedule": 60.0},
    "reap-lost-reports": {"task": "workers.tasks.explain.explanation_reports_reap", "schedule": 60.0},
    "reconcile-agreements": {"task": "workers.tasks.agreement.agreements_reconcile", "schedule": 60.0},
    "reap-abandoned-imports": {"task": "workers.tasks.ingest.import_jobs_reap", "schedule": 600.0},
}
CELERY_TASK_ALWAYS_EAGER = False
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
HITL_WORKER_HEARTBEAT_SECONDS = env.int("HITL_WORKER_HEARTBEAT_SECONDS", default=10)
HITL_TORCH_THREADS = env.int("HITL_TORCH_THREADS", default=1)
# A training run, each pool-scoring chunk and each batch-lane proposal or explanation task execute in a child
# process forked for them (workers.isolation): the batch lane's memory goes back to the OS after each, and a
# run that dies of memory ends FAILED with the reason. The test settings turn it off for the suite's shared
# worker (the tests that need it turn it on for workers of their own; docs/results, reliability drill).
HITL_BATCH_IN_CHILD = env.bool("HITL_BATCH_IN_CHILD", default=True)
HITL_LEASE_SECONDS = env.int("HITL_LEASE_SECONDS", default=1800)  # a reader's hold on a case
# a multi-reader case whose agreement update was lost (worker killed) gets it again after this many seconds
HITL_AGREEMENT_RECONCILE_SECONDS = env.int("HITL_AGREEMENT_RECONCILE_SECONDS", default=120)
HITL_SCORING_CHUNK_CASES = env.int("HITL_SCORING_CHUNK_CASES", default=64)  # pool cases per scoring task
HITL_EXPORT_TTL_DAYS = env.int("HITL_EXPORT_TTL_DAYS", default=7)  # export zips are deleted after this
# On-demand explanations a reader waits for (interactive methods: one forward, at most one backward pass).
# Off (default): the request enqueues them for a worker and waits up to HITL_EXPLAIN_WAIT_SECONDS for the
# map, so the web process never imports torch. On: the web process computes them itself (imports torch).
HITL_EXPLAIN_IN_WEB = env.bool("HITL_EXPLAIN_IN_WEB", default=False)
HITL_EXPLAIN_WAIT_SECONDS = env.float("HITL_EXPLAIN_WAIT_SECONDS", default=5.0)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
}
