"""Settings for the bench's database site; the database is read from BENCH_DB."""

import os
from pathlib import Path


def _database():
    kind, _, where = os.environ.get("BENCH_DB", "").partition(":")
    if kind == "sqlite" and where:
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": where}
    if kind == "pg" and where:
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "bench",
            "USER": "postgres",
            "HOST": where,
            # One connection per thread, kept: what a production site configures.
            "CONN_MAX_AGE": None,
        }
    raise RuntimeError("BENCH_DB must be sqlite:/path or pg:/socket/dir")


SECRET_KEY = "bench-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["bench.apps.dbsite"]
MIDDLEWARE = []
ROOT_URLCONF = "bench.apps.dbsite.urls"
DATABASES = {"default": _database()}
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [Path(__file__).parent / "templates"],
    }
]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
