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


def _library_dirs() -> tuple[str, ...]:
    import sysconfig

    paths = sysconfig.get_paths()
    dirs = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    dirs.add(os.path.dirname(os.path.abspath(__file__)))
    return tuple(os.path.join(d, "") for d in dirs)


def _where(exc: BaseException) -> str:
    """`file:line` of the innermost frame in the user's own code (not Python's library, an
    installed package or Bartizan), so `KeyError: 'SECRET'` points at settings.py:3 and not at
    the os module; the innermost frame when every frame is library code."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f" ({exc.filename}:{exc.lineno})"
    tb = traceback.extract_tb(exc.__traceback__)
    if not tb:
        return ""
    library = _library_dirs()
    own = [
        f
        for f in tb
        if not f.filename.startswith("<")
        and not os.path.abspath(f.filename).startswith(library)
        and "importlib" not in f.filename
    ]
    frame = own[-1] if own else tb[-1]
    return f" ({frame.filename}:{frame.lineno})"


def show_traceback(exc: BaseException) -> None:
    """The full traceback on stderr (with --log-level debug)."""
    sys.stderr.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    sys.stderr.flush()


def _not_found_hint() -> str:
    return (
        f" (looked in {os.getcwd()} and the import path; run from the project's directory, or"
        " give it with --chdir DIR or --pythonpath DIR)"
    )


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
            raise UserError(
                f"cannot import module {module_name!r}: no such module{_not_found_hint()}"
            ) from e
        raise UserError(
            f"error importing {module_name!r}: {type(e).__name__}: {e}{_where(e)}"
        ) from e
    except SyntaxError as e:
        # Its message already names the file and line.
        raise UserError(f"error importing {module_name!r}: {type(e).__name__}: {e}") from e
    except Exception as e:
        raise UserError(
            f"error importing {module_name!r}: {type(e).__name__}: {e}{_where(e)}"
        ) from e
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
            raise UserError(f"factory {spec!r} failed: {type(e).__name__}: {e}{_where(e)}") from e
    if not callable(obj):
        raise UserError(f"{spec!r} is not a WSGI application (not callable)")
    return obj


def _django_settings():
    """The loaded Django project's settings, or None when the app did not configure Django."""
    django_conf = sys.modules.get("django.conf")
    if django_conf is None or not django_conf.settings.configured:
        return None
    return django_conf.settings


def warm_django(check: bool) -> None:
    """Imports the URLconf (Django does it on the first request), and with `check` runs the
    system checks, so that a broken deploy fails here, before the worker says it serves."""
    settings = _django_settings()
    if settings is None:
        return
    try:
        from django.urls import get_resolver

        get_resolver().url_patterns  # noqa: B018 - imports every urls module
    except Exception as e:
        raise UserError(f"the URLconf does not load: {type(e).__name__}: {e}{_where(e)}") from e
    if check:
        from django.core import checks

        errors = [m for m in checks.run_checks() if m.is_serious()]
        if errors:
            first = errors[0]
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise UserError(f"Django's system checks failed: {first}{more}")


def static_root_warning() -> str | None:
    """Why Django's static files will not be served, when django.contrib.staticfiles is
    installed and STATIC_ROOT is unset, missing or empty."""
    settings = _django_settings()
    if settings is None or "django.contrib.staticfiles" not in settings.INSTALLED_APPS:
        return None
    root = getattr(settings, "STATIC_ROOT", None)
    url = getattr(settings, "STATIC_URL", None) or "/static/"
    fix = "run `python manage.py collectstatic`"
    if not root:
        return f"STATIC_ROOT is not set: nothing is served at {url} (set it, then {fix})"
    root = os.fspath(root)
    if not os.path.isdir(root):
        return f"STATIC_ROOT {root} does not exist: nothing is served at {url} ({fix})"
    if not any(files for _, _, files in os.walk(root)):
        return f"STATIC_ROOT {root} is empty: nothing is served at {url} ({fix})"
    return None


def count_files(directory: str) -> int:
    return sum(len(files) for _, _, files in os.walk(directory))


def django_mounts(required: bool) -> dict[str, list[tuple[str, str]]]:
    """Mounts of the loaded Django project: STATIC_URL/STATIC_ROOT as ``static``,
    MEDIA_URL/MEDIA_ROOT as ``media`` (user uploads, served sandboxed)."""
    settings = _django_settings()
    if settings is None:
        if required:
            raise UserError("--django: the app did not configure Django settings")
        return {"static": [], "media": []}
    mounts: dict[str, list[tuple[str, str]]] = {"static": [], "media": []}
    for kind, url_name, root_name in (
        ("static", "STATIC_URL", "STATIC_ROOT"),
        ("media", "MEDIA_URL", "MEDIA_ROOT"),
    ):
        url = getattr(settings, url_name, None) or ""
        root = getattr(settings, root_name, None)
        # Only local prefixes can be served here; a CDN URL is someone else's business.
        if not root or not url.startswith("/") or url == "/":
            continue
        root = os.fspath(root)
        if kind == "media":
            os.makedirs(root, exist_ok=True)
        if os.path.isdir(root):
            mounts[kind].append((url.rstrip("/"), root))
    return mounts
