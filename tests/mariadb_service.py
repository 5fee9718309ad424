"""A throwaway database on the real MariaDB (or MySQL) on 127.0.0.1:3306 for the MySQL DB-check tests.

scripts/test starts the installed MariaDB when none answers. Each run gets a database of its own, with a random
name, dropped after; it holds the rows of tests/services.py's PostgreSQL one (``tb_mes_wrk_prc_i``) and a one-row
``gauge`` table that the scheduler test moves between thresholds.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pymysql

from tests.services import ROWS

HOST, PORT, USER = "127.0.0.1", 3306, "root"


def admin(database: str | None = None) -> Any:
    """A read-write root session (autocommit), for setting up and changing what the tests read."""
    try:
        return pymysql.connect(
            host=HOST,
            port=PORT,
            user=USER,
            password="",
            database=database,
            autocommit=True,
            connect_timeout=5,
        )
    except pymysql.err.OperationalError as exc:
        raise RuntimeError(
            f"no MariaDB/MySQL answers on {HOST}:{PORT} as {USER} without a password ({exc.args[0]}); "
            "scripts/test starts the installed one"
        ) from None


@contextmanager
def mariadb_database() -> Iterator[dict[str, str]]:
    """The DB_* environment of a throwaway database with ``tb_mes_wrk_prc_i`` and ``gauge`` (dropped after)."""
    name = f"guardia_test_{uuid.uuid4().hex[:10]}"
    root = admin()
    with root.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    try:
        with admin(name) as db, db.cursor() as cursor:
            cursor.execute(
                "CREATE TABLE tb_mes_wrk_prc_i (work_date date, prc_code varchar(16), err_msg text,"
                " reg_date datetime, qty decimal(10,2) DEFAULT 1.50, blob_col varbinary(8) DEFAULT x'00ff')"
            )
            cursor.executemany(
                "INSERT INTO tb_mes_wrk_prc_i (work_date, prc_code, err_msg, reg_date) VALUES (%s, %s, %s, %s)",
                ROWS,
            )
            cursor.execute("CREATE TABLE gauge (name varchar(16) PRIMARY KEY, n int)")
            cursor.execute("INSERT INTO gauge VALUES ('backlog', 5)")
        yield {"DB_HOST": HOST, "DB_PORT": str(PORT), "DB_USER": USER, "DB_PASSWORD": "", "DB_NAME": name}
    finally:
        with root.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        root.close()
