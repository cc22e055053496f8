"""WSGI entry point for the Bartizan demo site: ``bartizan.demo.wsgi:application``."""

import contextlib
import os

from django.core.wsgi import get_wsgi_application

try:
    import fcntl
except ImportError:  # Windows: no flock, fall back to running unlocked.
    fcntl = None

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bartizan.demo.settings")

application = get_wsgi_application()


@contextlib.contextmanager
def _exclusive(lock_path):
    # Several worker processes may import this module at once; only one of
    # them should create the tables.
    if fcntl is None:
        yield
        return
    with open(lock_path, "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _migrate():
    """Create or update the demo database so the site works on first start."""
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    db_path = settings.DATABASES["default"]["NAME"]
    try:
        with _exclusive(f"{db_path}.lock"):
            if os.path.exists(db_path):
                executor = MigrationExecutor(connection)
                if not executor.migration_plan(executor.loader.graph.leaf_nodes()):
                    return
            call_command("migrate", interactive=False, verbosity=0)
    finally:
        # Don't hand this connection to request threads or forked workers.
        connection.close()


_migrate()
