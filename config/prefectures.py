"""The list of prefectures: data files under ``config/data``, not code.

A prefecture file is TOML with ``province`` and a ``[[prefecture]]`` array of
tables holding ``code`` (six-digit GB/T 2260), ``name``, ``short`` and
optional ``aliases``. Another province is another file.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from importlib import resources
from pathlib import Path

_CODE = re.compile(r"^[1-9]\d{5}$")


class PrefectureError(Exception):
    """The prefecture file is malformed, or a prefecture is unknown."""


@dataclasses.dataclass(frozen=True)
class Prefecture:
    code: str
    name: str
    short_name: str
    aliases: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """Every name by which folders and files may refer to it."""
        return (self.name, self.short_name, *self.aliases)


@dataclasses.dataclass(frozen=True)
class PrefectureList:
    province: str
    prefectures: tuple[Prefecture, ...]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.prefectures)

    def __len__(self) -> int:
        return len(self.prefectures)

    def find(self, key: str) -> Prefecture:
        """Look a prefecture up by code, full name, short name or alias."""
        key = key.strip()
        for prefecture in self.prefectures:
            if key == prefecture.code or key in prefecture.names:
                return prefecture
        raise PrefectureError(
            f"unknown prefecture {key!r}: give a code such as "
            f"{self.prefectures[0].code} or a name such as {self.prefectures[0].name}"
        )

    def by_code(self, code: str) -> Prefecture:
        for prefecture in self.prefectures:
            if prefecture.code == code:
                return prefecture
        raise PrefectureError(f"unknown prefecture code {code!r}")


def load_prefectures(name_or_path: str = "hubei") -> PrefectureList:
    """Load a bundled list by name (``hubei``) or a TOML file by path."""
    if name_or_path.endswith(".toml") or "/" in name_or_path:
        source = Path(name_or_path)
        try:
            text = source.read_text(encoding="utf-8")
        except OSError as exc:
            raise PrefectureError(f"{source}: cannot read: {exc.strerror}") from exc
    else:
        resource = resources.files("censusdrop.config") / "data"
        resource = resource / f"prefectures-{name_or_path}.toml"
        try:
            text = resource.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise PrefectureError(
                f"no bundled prefecture list named {name_or_path!r}"
            ) from None
        source = Path(str(resource))
    return parse_prefectures(text, str(source))


def parse_prefectures(text: str, source: str = "<prefectures>") -> PrefectureList:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PrefectureError(f"{source}: not valid TOML: {exc}") from exc
    province = raw.get("province")
    entries = raw.get("prefecture")
    if not isinstance(province, str) or not isinstance(entries, list) or not entries:
        raise PrefectureError(
            f"{source}: needs 'province' and at least one [[prefecture]]"
        )
    prefectures = tuple(
        _parse_entry(entry, f"{source}: prefecture #{index}")
        for index, entry in enumerate(entries, 1)
    )
    _check_unique(prefectures, source)
    return PrefectureList(province, prefectures)


def _parse_entry(entry: object, where: str) -> Prefecture:
    if not isinstance(entry, dict):
        raise PrefectureError(f"{where}: must be a table")
    code, name, short = entry.get("code"), entry.get("name"), entry.get("short")
    aliases = entry.get("aliases", [])
    if not isinstance(code, str) or not _CODE.match(code):
        raise PrefectureError(f"{where}: code must be six digits, got {code!r}")
    if not isinstance(name, str) or not name or not isinstance(short, str):
        raise PrefectureError(f"{where}: name and short must be non-empty strings")
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise PrefectureError(f"{where}: aliases must be a list of strings")
    return Prefecture(code, name, short or name, tuple(aliases))


def _check_unique(prefectures: tuple[Prefecture, ...], source: str) -> None:
    seen: dict[str, str] = {}
    for prefecture in prefectures:
        for key in (prefecture.code, *prefecture.names):
            if key in seen and seen[key] != prefecture.code:
                raise PrefectureError(f"{source}: {key!r} names two prefectures")
            seen[key] = prefecture.code
