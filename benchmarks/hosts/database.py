"""The runs' PostgreSQL databases: one per run, on the system server, named for the run."""

from __future__ import annotations

import os

import psycopg

PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
DB_PREFIX = "inference_hosts_"


def create_database(name: str) -> None:
    """Create a run's (empty) database."""
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')


def with_database(url: str, name: str) -> str:
    """`url` with its database name replaced by `name`."""
    return url.rsplit("/", 1)[0] + f"/{name}"


def drop_database(name: str) -> None:
    """Drop a run's database (and end its sessions)."""
    if not name.startswith(DB_PREFIX):
        raise ValueError(f"{name} is not a harness database")
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def harness_databases() -> list[str]:
    """Databases harness runs made."""
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
        rows = connection.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (DB_PREFIX.replace("_", r"\_") + "%",)
        ).fetchall()
    return [row[0] for row in rows]
