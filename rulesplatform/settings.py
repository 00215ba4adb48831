"""Settings for every environment; production differs only by environment values.

SQLite and an embedded (filesystem) Celery transport are the defaults so that a bare
machine needs no server; `DATABASE_URL` and `CELERY_BROKER_URL` switch to PostgreSQL
and Redis.
"""

import secrets
from pathlib import Path

import dj_database_url

from .env import env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("RULESPLATFORM_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DJANGO_DEBUG", False)
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _local_secret_key() -> str:
    # Without DJANGO_SECRET_KEY (a bare machine), a random key is made once and kept in
    # var/, outside the repository, so web, worker and beat on this machine agree on it.
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(64))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = env_str("DJANGO_SECRET_KEY") or _local_secret_key()
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "accounts.admin_apps.RulesPlatformAdminConfig",  # django.contrib.admin with the role-aware site
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "reversion",
    "audit",
    "accounts",
    "campaigns",
    "rules",
    "experiments",
    # Last: its management commands (demo, run_platform) may import every app.
    "rulesplatform",
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
    "audit.middleware.RequestIdMiddleware",
]

ROOT_URLCONF = "rulesplatform.urls"
WSGI_APPLICATION = "rulesplatform.wsgi.application"
ASGI_APPLICATION = "rulesplatform.asgi.application"

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

_SQLITE_URL = f"sqlite:///{VAR_DIR / 'db.sqlite3'}"
DATABASES = {"default": dj_database_url.parse(env_str("DATABASE_URL", _SQLITE_URL), conn_max_age=60)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, worker, beat and simulator share one file: WAL lets readers run beside the
    # writer, IMMEDIATE takes the write lock up front instead of failing on upgrade.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

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
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = DEBUG
# Uploaded CSV batches of tens of thousands of rows exceed Django's 2.5 MB default.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 50 * 1024 * 1024)
DATA_UPLOAD_MAX_NUMBER_FIELDS = 10_000

# --- Security: safe by default, relaxed only by DJANGO_DEBUG for local runs -------------
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", not DEBUG)
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# --- REST API ------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rulesplatform.api.pagination.StandardPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.AnonRateThrottle",
        "rest_framework.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env_str("API_THROTTLE_ANON", "60/min"),
        "user": env_str("API_THROTTLE_USER", "6000/min"),
        # accounts.throttling.MetricPushThrottle: per API token (or per user), on metric pushes.
        "metric_push": env_str("API_THROTTLE_METRIC_PUSH", "120/min"),
    },
    # Documents the shared error body on every operation (rulesplatform.api.schema).
    "DEFAULT_SCHEMA_CLASS": "rulesplatform.api.schema.AutoSchema",
    "EXCEPTION_HANDLER": "rulesplatform.api.exceptions.api_exception_handler",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Rules platform API",
    "DESCRIPTION": "Campaign micro-adjustment rules: metrics in, capped and audited changes out.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI assets come from the drf-spectacular-sidecar package: no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Tags and operation ids from the resource after /api/v1/ ("tokens"), not the version.
    "SCHEMA_PATH_PREFIX": r"/api/v[0-9]+",
    # Several models have a `status` with different choices: name each set after its enum.
    "ENUM_NAME_OVERRIDES": {
        "DeliveryStatusEnum": "campaigns.models.DeliveryStatus",
        "CampaignChannelEnum": "campaigns.models.Channel",
        "ChangeStatusEnum": "rules.models.Change.Status",
        "ChangeKindEnum": "rules.models.Change.Kind",
        "ChangeFieldEnum": "rules.models.Change.Field",
        "ChangePushStatusEnum": "rules.models.ChangePush.Status",
        "ExperimentStatusEnum": "experiments.models.Experiment.Status",
        "ExperimentKindEnum": "experiments.models.Experiment.Kind",
        "NotificationDeliveryStatusEnum": "rules.models.NotificationDelivery.Status",
        "NotificationChannelEnum": "rules.models.NotificationDelivery.Channel",
        "NotificationEventEnum": "rules.models.NotificationEvent",
        "ConnectorKindEnum": "rules.models.PlatformConnector.Kind",
        "BreakerStateEnum": "rules.models.PlatformConnector.Breaker",
        "ApprovalGateEnum": "rules.models.ApprovalPolicy.Gate",
        "ApprovalDecisionEnum": "rules.models.Approval.Decision",
    },
}

# --- Celery -----------------------------------------------------------------------------
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or "filesystem://"
if CELERY_BROKER_URL == "filesystem://":
    _queue_dir = VAR_DIR / "celery-queue"
    # The filesystem transport expects its folders to exist before anyone publishes.
    for _folder in (_queue_dir, VAR_DIR / "celery-processed", VAR_DIR / "celery-control"):
        _folder.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir),
        "data_folder_out": str(_queue_dir),
        "processed_folder": str(VAR_DIR / "celery-processed"),
        # Broadcast/pidbox exchanges; kombu's default is ./control in the working directory.
        "control_folder": str(VAR_DIR / "celery-control"),
        "store_processed": False,
    }
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND") or None
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 300)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 360)
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = "UTC"
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
# Due rules of one workspace are evaluated in tasks of at most this many rules (rules.tasks).
RULES_EVALUATION_CHUNK_SIZE = env_int("RULES_EVALUATION_CHUNK_SIZE", 50)

# --- E-mail -----------------------------------------------------------------------------
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "rules@localhost")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}
