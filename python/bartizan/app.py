"""Finding the app a worker serves: `MODULE:NAME` imported (or, with a factory, called) and,
for a Django project, the static and media roots to mount.

Kept apart from the command line because it runs in the worker processes, after the
supervisor has parsed the flags: a mistake here is the user's, so it is one line
(`UserError`), never a traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Callable


class UserError(Exception):
    """A problem the user can fix; reported as one line, exit code 2."""


def _where(exc: BaseException) -> str:
    """`file:line` of the innermost frame, so an import error points somewhere useful."""
    tb = traceback.extract_tb(exc.__traceback__)
    return f" ({tb[-1].filename}:{tb[-1].lineno})" if tb else ""


def load_app(spec: str, factory: bool = False) -> Callable:
    module_name, _, attr = spec.partition(":")
    attr = attr or "application"
    if not module_name:
        raise UserError(f"app {spec!r}: expected MODULE:NAME")
    # Like `python -m`, the current directory is importable.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise UserError(f"cannot import module {module_name!r}: no such module") from None
        raise UserError(
            f"error importing {module_name!r}: {type(e).__name__}: {e}{_where(e)}"
        ) from None
    except Exception as e:
        raise UserError(
            f"error importing {module_name!r}: {type(e).__name__}: {e}{_where(e)}"
        ) from None
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UserError(f"module {module_name!r} has no attribute {attr!r}") from None
    if factory:
        if not callable(obj):
            raise UserError(f"factory {spec!r} is not callable")
        try:
            obj = obj()
        except Exception as e:
            raise UserError(
                f"factory {spec!r} failed: {type(e).__name__}: {e}{_where(e)}"
            ) from None
    if not callable(obj):
        raise UserError(f"{spec!r} is not a WSGI application (not callable)")
    return obj


def django_mounts(required: bool) -> list[tuple[str, str]]:
    """STATIC_URL/STATIC_ROOT and MEDIA_URL/MEDIA_ROOT of the loaded Django project."""
    django_conf = sys.modules.get("django.conf")
    configured = django_conf is not None and django_conf.settings.configured
    if not configured:
        if required:
            raise UserError("--django: the app did not configure Django settings")
        return []
    settings = django_conf.settings
    mounts = []
    for url_name, root_name in (("STATIC_URL", "STATIC_ROOT"), ("MEDIA_URL", "MEDIA_ROOT")):
        url = getattr(settings, url_name, None) or ""
        root = getattr(settings, root_name, None)
        # Only local prefixes can be served here; a CDN URL is someone else's business.
        if not root or not url.startswith("/") or url == "/":
            continue
        root = os.fspath(root)
        if url_name == "MEDIA_URL":
            os.makedirs(root, exist_ok=True)
        if os.path.isdir(root):
            mounts.append((url.rstrip("/"), root))
    return mounts
