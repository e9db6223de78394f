"""Aliases and mailing lists: the aliases(5) file format, or a Python mapping.

A file holds one alias per logical line::

    # comments and empty lines are ignored
    postmaster: root
    root:       alice, bob@example.org
    staff:      alice,
                bob            # a line starting with whitespace continues the last one
    team@example.com: :include:team.txt     # one address per line or comma-separated
    "john doe": jdoe

Names (the part before the first ``:``) are local parts, compared without
regard to case (``"quoted local parts"`` without their quotes); a name may
also be a whole address (``team@example.com``), which matches only in that
domain and wins over a bare local part. A bare name applies to addresses in
the domain first given to ``expand`` (the caller only asks for local
recipients) or in ``local_domains``, never to a remote target.

Targets are addresses separated by commas (not inside double quotes), or
``:include:FILE``, a list of addresses in FILE (a path relative to the
aliases file). A target without a domain stays in the domain of the
address being expanded. A ``#`` after whitespace starts a comment.

Expansion is recursive: a target that is itself an alias is expanded in
turn. An address met again on its own expansion path (``bob: bob, ...``, or
``a: b`` with ``b: a``) is delivered as it is rather than expanded again, so
loops end; the result has each address once, in first-seen order.

Program (``|command``) and file (``/path``) targets are refused with a
``ConfigError``: mail from anyone on the Internet would run a command or
write a file as the server's user, which fastsmtp will not do; deliver to
a local mailbox (``maildir``) and let a program read that instead.
Files are read once, when the ``Aliases`` is made: restart the server to
pick up a change.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from ..config import ConfigError
from ._spool import domain_of

__all__ = ["Aliases"]

_INCLUDE = ":include:"


class Aliases:
    """An alias table: ``Aliases({"staff": ["alice", "bob@example.org"]})``.

    A value may be a list of targets or one string of comma-separated
    targets; ``:include:FILE`` targets are read relative to ``base_dir``
    (default: the working directory). ``ConfigError`` for a bad entry.
    """

    def __init__(
        self,
        mapping: Mapping[str, Sequence[str] | str],
        *,
        base_dir: str | os.PathLike[str] | None = None,
        local_domains: Iterable[str] = (),
    ) -> None:
        base = Path(base_dir) if base_dir is not None else Path.cwd()
        self._local = frozenset(d.lower().rstrip(".") for d in local_domains)
        self._table: dict[str, list[str]] = {}
        for name, value in mapping.items():
            key = _key(name)
            if not key:
                raise ConfigError(f"aliases: empty alias name {name!r}")
            if key in self._table:
                raise ConfigError(f"aliases: alias {name!r} is defined twice")
            items = _split(value) if isinstance(value, str) else list(value)
            self._table[key] = _targets(items, base, f"aliases: alias {name!r}", ())

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], *, local_domains: Iterable[str] = ()
    ) -> Aliases:
        """Read an aliases(5) file (UTF-8); ``ConfigError`` names the file and line."""
        path = Path(path)
        try:
            text = path.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"aliases file {path}: {exc}") from None
        entries: dict[str, str] = {}
        lines: dict[str, int] = {}
        for number, line in _logical_lines(text, path):
            name, sep, value = _partition_unquoted(line, ":")
            if not sep or not name.strip():
                raise ConfigError(f"{path}:{number}: expected 'name: target, target, ...'")
            key = _key(name)
            if key in lines:
                raise ConfigError(
                    f"{path}:{number}: alias {name.strip()!r} already defined on line {lines[key]}"
                )
            lines[key] = number
            entries[name.strip()] = value
        aliases = cls({}, local_domains=local_domains)
        for name, value in entries.items():
            where = f"{path}:{lines[_key(name)]}: alias {name!r}"
            aliases._table[_key(name)] = _targets(_split(value), path.parent, where, ())
        return aliases

    def __contains__(self, address: object) -> bool:
        return isinstance(address, str) and self._lookup(address, domain_of(address)) is not None

    def __len__(self) -> int:
        return len(self._table)

    def expand(self, address: str) -> list[str] | None:
        """The final addresses for ``address``, or ``None`` if it is not an alias.

        For delivery and for EXPN. Recursive, loop-safe and without
        duplicates (compared without regard to case); an alias may expand
        to nothing (``[]``).
        """
        home = domain_of(address)
        if self._lookup(address, home) is None:
            return None
        result: dict[str, str] = {}
        self._walk(address, home, path=set(), done=set(), out=result)
        return list(result.values())

    def _walk(
        self, address: str, home: str, path: set[str], done: set[str], out: dict[str, str]
    ) -> None:
        found = self._lookup(address, home)
        if found is None:
            out.setdefault(address.lower(), address)
            return
        key, targets = found
        if key in path:  # met again on its own path: deliver it as it is
            out.setdefault(address.lower(), address)
            return
        if key in done:  # already expanded through another alias
            return
        path.add(key)
        domain = domain_of(address)
        for target in targets:
            qualified = target if "@" in target or not domain else f"{target}@{domain}"
            self._walk(qualified, home, path, done, out)
        path.discard(key)
        done.add(key)

    def _lookup(self, address: str, home: str) -> tuple[str, list[str]] | None:
        """The entry for ``address``: its ``user@domain`` key, else its bare local part.

        A bare name applies only to an address without a domain, in the
        domain of the address first given to ``expand`` (which the caller
        judged local), or in ``local_domains``: never to a remote address
        that an alias forwards to.
        """
        local, at, _ = address.rpartition("@")
        if not at:
            local = address
        domain = domain_of(address)
        keys = [_key(address)] if domain else []
        if domain in {"", home} or domain in self._local:
            keys.append(_key(local))
        for key in keys:
            if key in self._table:
                return key, self._table[key]
        return None


def _key(name: str) -> str:
    """A name compared without case and without the quotes of a quoted local part."""
    name = name.strip()
    local, at, domain = name.rpartition("@")
    if not at:
        local, domain = name, ""
    if len(local) >= 2 and local[0] == local[-1] == '"':
        local = local[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return (local + at + domain).lower()


def _targets(
    items: Sequence[str], base: Path, where: str, including: tuple[Path, ...]
) -> list[str]:
    """Check targets and resolve ``:include:`` files (recursively, refusing include loops)."""
    targets: list[str] = []
    for raw in items:
        item = raw.strip()
        if item.startswith("<") and item.endswith(">"):
            item = item[1:-1].strip()
        unquoted = item[1:-1] if len(item) >= 2 and item[0] == item[-1] == '"' else item
        if not item:
            continue
        if unquoted[:1] in ("|", "/"):
            kind = "program" if unquoted[0] == "|" else "file"
            raise ConfigError(
                f"{where}: {kind} target {item!r} refused: it would let anyone who can send "
                "mail run commands or write files as the server's user; deliver to a "
                "mailbox (maildir) and process it from there"
            )
        if unquoted[: len(_INCLUDE)].lower() == _INCLUDE:
            targets += _include(base / unquoted[len(_INCLUDE) :].strip(), where, including)
        else:
            targets.append(item)
    return targets


def _include(path: Path, where: str, including: tuple[Path, ...]) -> list[str]:
    resolved = path.resolve()
    if resolved in including:
        raise ConfigError(f"{where}: {path} includes itself")
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read include file {path}: {exc}") from None
    items: list[str] = []
    for line in text.splitlines():
        items += _split(_strip_comment(line))
    return _targets(items, path.parent, f"{where} (in {path})", (*including, resolved))


def _logical_lines(text: str, path: Path) -> Iterator[tuple[int, str]]:
    """``(first line number, text)`` of each entry, continuation lines joined."""
    current: tuple[int, str] | None = None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        line = _strip_comment(line)
        if line[:1].isspace():
            if current is None:
                raise ConfigError(f"{path}:{number}: continuation line without an alias before it")
            current = (current[0], f"{current[1]} {line.strip()}")
            continue
        if current is not None:
            yield current
        current = (number, line.strip())
    if current is not None:
        yield current


def _strip_comment(line: str) -> str:
    """The line without a ``#`` comment that starts after whitespace, outside quotes."""
    quoted = False
    for i, char in enumerate(line):
        if char == '"' and (i == 0 or line[i - 1] != "\\"):
            quoted = not quoted
        elif char == "#" and not quoted and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line


def _partition_unquoted(text: str, separator: str) -> tuple[str, str, str]:
    """``str.partition`` at the first ``separator`` outside double quotes."""
    quoted = False
    for i, char in enumerate(text):
        if char == '"' and (i == 0 or text[i - 1] != "\\"):
            quoted = not quoted
        elif char == separator and not quoted:
            return text[:i], separator, text[i + 1 :]
    return text, "", ""


def _split(value: str) -> list[str]:
    """Comma-separated targets; a comma inside double quotes does not split."""
    items: list[str] = []
    rest = value
    while rest:
        item, sep, rest = _partition_unquoted(rest, ",")
        items.append(item)
        if not sep:
            break
    return [item.strip() for item in items if item.strip()]
