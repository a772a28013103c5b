"""`make cluster`'s PostgreSQL and Redis: checks that both answer, creates the database when it is
missing, and prints the shell `export` lines the workers then run with (run-cluster.sh evals them).

A DATABASE_URL without a password (the local default, a superuser) is used only to set up: the
workers connect as a role of their own, named after the database, that owns it and nothing else,
with a password generated into the data directory's pgpass file (PGPASSFILE, mode 0600, so the
password is neither on a command line nor in the environment). Where the server trusts local
connections the password is not asked for, but the workers still cannot act as a superuser.
"""

from __future__ import annotations

import os
import secrets
import shlex
import sys
from pathlib import Path
from typing import NoReturn
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import redis
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo


def fail(message: str) -> NoReturn:
    sys.exit(f"run-cluster: {message}")


def note(message: str) -> None:
    print(f"run-cluster: note: {message}", file=sys.stderr)


def write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # when it existed with a wider mode
    with os.fdopen(fd, "w") as file:
        file.write(text)


def saved_password(pgpass: Path, database: str, role: str) -> str | None:
    """The password an earlier start wrote for this role and database, if any."""
    if not pgpass.exists():
        return None
    for line in pgpass.read_text().splitlines():
        fields = line.split(":")
        if len(fields) == 5 and fields[2:4] == [database, role]:
            return fields[4]
    return None


def ensure_role(conn: psycopg.Connection[tuple[object, ...]], role: str, password: str) -> None:
    # The password goes to the server as a SCRAM verifier, so no statement log ever holds it.
    verifier = conn.pgconn.encrypt_password(password.encode(), role.encode()).decode()
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone() is not None
    statement = "ALTER ROLE {} WITH LOGIN PASSWORD {}" if exists else "CREATE ROLE {} WITH LOGIN PASSWORD {}"
    conn.execute(sql.SQL(statement).format(sql.Identifier(role), sql.Literal(verifier)))


def create_database(conn: psycopg.Connection[tuple[object, ...]], name: str, owner: str | None) -> None:
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if owner is not None:
        statement += sql.SQL(" OWNER {}").format(sql.Identifier(owner))
    conn.execute(statement)
    print(f"created database {name}" + (f", owned by role {owner}" if owner else ""), file=sys.stderr)


def prepare_database(url: str, data_dir: Path) -> dict[str, str]:
    """Creates the database if needed; the variables the workers need where they differ from now."""
    params = conninfo_to_dict(url)
    name = str(params.get("dbname") or "postgres")
    admin = str(params.get("user") or "the default user")
    given_credentials = any(key in params for key in ("password", "passfile")) or any(
        key in os.environ for key in ("PGPASSWORD", "PGPASSFILE")
    )
    role = name  # the workers' role, named after its database
    pgpass = data_dir / "postgres.pgpass"
    try:
        with psycopg.connect(
            make_conninfo(url, dbname="postgres"), autocommit=True, connect_timeout=5
        ) as conn:
            row = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", [name])
            owner = row.fetchone()  # (name,) or None when there is no such database
            if given_credentials or role == admin:
                if owner is None:
                    create_database(conn, name, None)
                return {}
            if owner is not None and owner[0] != role:
                note(
                    f"database {name} belongs to {owner[0]}, so the workers connect as {admin}; drop it "
                    "to have make cluster create it with a role and password of its own"
                )
                return {}
            password = saved_password(pgpass, name, role) or secrets.token_urlsafe(32)
            try:
                ensure_role(conn, role, password)
            except psycopg.errors.InsufficientPrivilege as exc:
                fail(
                    f"{admin} may not create the workers' role {role} ({exc}); give DATABASE_URL a "
                    "password to connect as it is, or a user that may create roles"
                )
            if owner is None:
                create_database(conn, name, role)
    except psycopg.Error as exc:
        fail(f"PostgreSQL is not usable at DATABASE_URL ({exc}); start it or set DATABASE_URL")
    # token_urlsafe makes no colon or backslash, the two characters a pgpass line would need escaped.
    write_private(pgpass, f"*:*:{name}:{role}:{password}\n")
    parts = urlsplit(url)
    netloc = f"{quote(role, safe='')}@{parts.netloc.rpartition('@')[2]}"
    return {"DATABASE_URL": urlunsplit(parts._replace(netloc=netloc)), "PGPASSFILE": str(pgpass)}


def check_redis(url: str) -> None:
    try:
        redis.Redis.from_url(url, socket_timeout=5).ping()
    except redis.RedisError as exc:
        fail(f"Redis does not answer at REDIS_URL ({exc}); start it or set REDIS_URL")


def main() -> None:
    exports = prepare_database(os.environ["DATABASE_URL"], Path(os.environ["WRENN_DATA_DIR"]))
    check_redis(os.environ["REDIS_URL"])
    for name, value in exports.items():
        print(f"export {name}={shlex.quote(value)}")


if __name__ == "__main__":
    main()
