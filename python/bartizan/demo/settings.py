"""Django settings for the Bartizan demo site.

The site is meant for local, loopback use. The package directory may be
read-only (site-packages), so everything written at runtime lives elsewhere:
see BARTIZAN_DEMO_DB and BARTIZAN_DEMO_MEDIA.
"""

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
DATA_DIR = Path.home() / ".local" / "share" / "bartizan"

# Demo-only key: this site holds nothing worth protecting. Set
# BARTIZAN_DEMO_SECRET to override it.
SECRET_KEY = os.environ.get(
    "BARTIZAN_DEMO_SECRET",
    "bartizan-demo-insecure-key-do-not-use-for-anything-real",
)

DEBUG = os.environ.get("BARTIZAN_DEMO_DEBUG") == "1"

# The demo is served on loopback under whatever host/port the server binds.
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.staticfiles",
    "bartizan.demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]

ROOT_URLCONF = "bartizan.demo.urls"
WSGI_APPLICATION = "bartizan.demo.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
            ],
        },
    },
]

DB_PATH = Path(os.environ.get("BARTIZAN_DEMO_DB") or DATA_DIR / "demo.sqlite3").expanduser()
DB_PATH.parent.mkdir(parents=True, exist_ok=True)

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(DB_PATH),
        # Several worker processes may write at once; wait for the lock
        # instead of failing with "database is locked".
        "OPTIONS": {"timeout": 20},
    },
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

# The shipped files already sit in STATIC_ROOT, so the server can serve them
# without running collectstatic first.
STATIC_URL = "/static/"
STATIC_ROOT = PACKAGE_DIR / "static"
STATICFILES_DIRS = []

MEDIA_URL = "/media/"
MEDIA_ROOT = Path(os.environ.get("BARTIZAN_DEMO_MEDIA") or DATA_DIR / "media").expanduser()

# Django only logs request errors to the console when DEBUG is on; the
# server's stderr is the one place a demo user will look, so always send
# server errors there (ERROR leaves out the warning logged for every 4xx).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler", "level": "ERROR"}},
    "root": {"handlers": ["console"], "level": "ERROR"},
}
