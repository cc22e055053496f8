"""The databases behind the `db` and `pg` sections: a SQLite file, or a private
PostgreSQL cluster on a unix socket in a scratch directory, filled by
bench/apps/dbsite/setup.py. BENCH_DB tells the site (and so every server) which."""

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from lib import ROOT, log
from lib.processes import scratch, server_env
from lib.servers import py


def fill(env):
    subprocess.run(py("-m", "bench.apps.dbsite.setup"), cwd=ROOT, env=env, check=True)


def use_sqlite():
    """Points the site at a SQLite file in the scratch directory, filled once."""
    os.environ["BENCH_DB"] = f"sqlite:{scratch() / 'dbsite.sqlite3'}"
    fill(server_env())


def postgres_bin():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found and os.geteuid() == 0 and shutil.which("apt-get"):
        log("postgresql not found; installing it with apt-get")
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "postgresql"], check=True)
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


class Postgres:
    """A cluster of its own: initdb, pg_ctl start on a socket only, a `bench` database.
    PostgreSQL refuses to run as root, so as root it runs as the `postgres` user."""

    def __init__(self):
        self.bin = postgres_bin()
        self.dir = None

    def missing(self):
        if self.bin is None:
            return "PostgreSQL is not installed (Debian: apt-get install -y postgresql)"
        if os.geteuid() == 0 and shutil.which("runuser") is None:
            return "running as root without runuser to start PostgreSQL as postgres"
        return None

    def _as_owner(self, *argv):
        argv = [str(a) for a in argv]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def start(self):
        # Outside the 0700 scratch directory: the postgres user must reach it.
        self.dir = Path(tempfile.mkdtemp(prefix="bartizan-bench-pg-"))
        os.chmod(self.dir, 0o755)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        data = self.dir / "data"
        self._as_owner(self.bin / "initdb", "-D", data, "-A", "trust", "-U", "postgres")
        options = (
            f"-k {self.dir} -c listen_addresses='' -c fsync=off "
            "-c synchronous_commit=off -c shared_buffers=128MB"
        )
        self._as_owner(
            self.bin / "pg_ctl", "-D", data, "-l", self.dir / "log", "-o", options, "-w", "start"
        )
        self._as_owner(self.bin / "createdb", "-h", self.dir, "-U", "postgres", "bench")
        os.environ["BENCH_DB"] = f"pg:{self.dir}"
        fill(server_env())
        log(f"pg: cluster on {self.dir}")

    def stop(self):
        if self.dir is None:
            return
        try:
            self._as_owner(self.bin / "pg_ctl", "-D", self.dir / "data", "-m", "fast", "stop")
        except subprocess.CalledProcessError as exc:
            log(f"pg: stopping the cluster failed: {exc.stderr.decode(errors='replace')}")
        shutil.rmtree(self.dir, ignore_errors=True)
        os.environ.pop("BENCH_DB", None)
        self.dir = None
