"""The version index: one ``file_versions`` row per version of every file.

Trusts: the database. Guarantees: at most one row per path is ``current``
(the storage layer changes states only inside its own transactions), and a
row's id is the file id in the header of the encrypted file it describes,
so a file on disk names its own row and a swapped file gives itself away.

Where a version's bytes live follows from its row: a ``current`` version
is at ``areas/<area>/<path>``, any other at ``versions/<area>/<id>``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import sqlalchemy as sa

from censusdrop.server.schema import file_versions

from .streams import VersionInfo

STATES = ("current", "superseded", "deleted")

# The statements of every upload and download, built once: building one
# costs more than running it on SQLite.
_CURRENT = file_versions.select().where(
    file_versions.c.area == sa.bindparam("area"),
    file_versions.c.path == sa.bindparam("path"),
    file_versions.c.state == "current",
)
_BY_ID = file_versions.select().where(file_versions.c.id == sa.bindparam("id"))
_HIGHEST = sa.select(sa.func.max(file_versions.c.number)).where(
    file_versions.c.area == sa.bindparam("area"),
    file_versions.c.path == sa.bindparam("path"),
)
_INSERT = file_versions.insert()
_SET_STATE = (
    file_versions.update()
    .where(file_versions.c.id == sa.bindparam("version_id"))
    .values(state=sa.bindparam("new_state"), blob=sa.bindparam("new_blob"))
)


def current(conn: sa.Connection, area: str, path: str) -> VersionInfo | None:
    """The current version at ``path``, if the index has one."""
    row = conn.execute(_CURRENT, {"area": area, "path": path}).first()
    return None if row is None else _version(row)


def by_id(conn: sa.Connection, version_id: str) -> VersionInfo | None:
    row = conn.execute(_BY_ID, {"id": version_id}).first()
    return None if row is None else _version(row)


def history(conn: sa.Connection, area: str, path: str) -> list[VersionInfo]:
    """Every version ever held at ``path``, newest first."""
    query = (
        file_versions.select()
        .where(file_versions.c.area == area, file_versions.c.path == path)
        .order_by(file_versions.c.number.desc())
    )
    return [_version(row) for row in conn.execute(query)]


def next_number(conn: sa.Connection, area: str, path: str) -> int:
    highest = conn.execute(_HIGHEST, {"area": area, "path": path}).scalar()
    return 1 + int(highest or 0)


def insert(conn: sa.Connection, info: VersionInfo) -> None:
    conn.execute(_INSERT, _row(info))


def set_state(conn: sa.Connection, info: VersionInfo, state: str) -> VersionInfo:
    """Record that ``info`` is no longer (or again) the current version."""
    if state not in STATES:
        raise ValueError(f"state must be one of {STATES}")
    changed = dataclasses.replace(info, state=state)
    conn.execute(
        _SET_STATE,
        {"version_id": info.id, "new_state": state, "new_blob": blob_of(changed)},
    )
    return changed


def move(conn: sa.Connection, area: str, source: str, target: str) -> None:
    """Current rows at ``source`` (a file, or a folder and all below it)
    now live at ``target``, each numbered after the history found there."""
    rows = conn.execute(
        sa.select(file_versions.c.id, file_versions.c.path).where(
            file_versions.c.area == area, file_versions.c.state == "current"
        )
    ).all()
    for version_id, path in rows:
        if path == source or path.startswith(source + "/"):
            new_path = target + path[len(source) :]
            conn.execute(
                file_versions.update()
                .where(file_versions.c.id == version_id)
                .values(
                    path=new_path,
                    number=next_number(conn, area, new_path),
                    blob=f"areas/{area}/{new_path}",
                )
            )


def blob_of(info: VersionInfo) -> str:
    """Where the version's bytes live, relative to the data root."""
    if info.state == "current":
        return f"areas/{info.area}/{info.path}"
    return f"versions/{info.area}/{info.id}"


def _row(info: VersionInfo) -> dict[str, Any]:
    row = dataclasses.asdict(info)
    row["blob"] = blob_of(info)
    return row


def _version(row: sa.Row[Any]) -> VersionInfo:
    m = row._mapping
    return VersionInfo(
        id=m["id"],
        area=m["area"],
        path=m["path"],
        number=m["number"],
        size=m["size"],
        sha256=m["sha256"],
        created_at=m["created_at"],
        account=m["account"],
        state=m["state"],
    )


def usage(conn: sa.Connection, area: str) -> tuple[int, int]:
    """Bytes and number of the current files of an area."""
    row = conn.execute(
        sa.select(
            sa.func.coalesce(sa.func.sum(file_versions.c.size), 0),
            sa.func.count(),
        ).where(file_versions.c.area == area, file_versions.c.state == "current")
    ).one()
    return int(row[0]), int(row[1])
