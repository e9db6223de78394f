"""Aliases from real aliases(5) files and from mappings: parsing, expansion, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from fastsmtp.config import ConfigError
from fastsmtp.delivery.aliases import Aliases

ALIASES = """\
# system aliases
postmaster: root
ROOT:       alice, bob@elsewhere.org
  , carol
staff:      alice,
            dave,    # a comment after the targets
	eve
"john doe": jdoe
team@example.com: :include:lists/team.txt
team:       nobody-else
everyone:   staff, team@example.com, "frank smith"@example.net, <grace@example.net>
self:       self, self-archive@example.net
ping: pong
pong: ping, pong-owner
empty:
"""

TEAM = """\
# the team
alice, heidi
ivan@example.org
:include:more.txt
"""


@pytest.fixture
def aliases(tmp_path: Path) -> Aliases:
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "team.txt").write_text(TEAM)
    (tmp_path / "lists" / "more.txt").write_text("judy\n")
    (tmp_path / "aliases").write_text(ALIASES)
    return Aliases.from_file(tmp_path / "aliases")


def test_simple_case_insensitive_and_continued(aliases: Aliases) -> None:
    assert aliases.expand("Postmaster@Example.com") == [
        "alice@example.com",
        "bob@elsewhere.org",
        "carol@example.com",
    ]
    assert aliases.expand("staff@example.com") == [
        "alice@example.com",
        "dave@example.com",
        "eve@example.com",
    ]
    assert aliases.expand("nobody@example.com") is None
    assert "STAFF@example.com" in aliases and "nobody@example.com" not in aliases
    assert aliases.expand("empty@example.com") == []
    assert aliases.expand("root") == ["alice", "bob@elsewhere.org", "carol"]


def test_quoted_local_parts(aliases: Aliases) -> None:
    assert aliases.expand('"John Doe"@example.com') == ["jdoe@example.com"]
    assert aliases.expand("everyone@example.com") == [
        "alice@example.com",
        "dave@example.com",
        "eve@example.com",
        "heidi@example.com",
        "ivan@example.org",
        "judy@example.com",
        '"frank smith"@example.net',
        "grace@example.net",
    ]


def test_domain_keys_and_includes_relative_to_the_file(aliases: Aliases) -> None:
    # team@example.com has its own entry (an include); team elsewhere the bare one
    assert aliases.expand("team@example.com") == [
        "alice@example.com",
        "heidi@example.com",
        "ivan@example.org",
        "judy@example.com",
    ]
    assert aliases.expand("team@example.org") == ["nobody-else@example.org"]


def test_loops_end_and_duplicates_go(aliases: Aliases) -> None:
    assert aliases.expand("self@example.com") == [
        "self@example.com",
        "self-archive@example.net",
    ]
    assert aliases.expand("ping@example.com") == ["ping@example.com", "pong-owner@example.com"]
    loop = Aliases({"a": "b, c", "b": ["a", "C"], "c": ["a", "b"]})
    # every member of the cycle met again on its own path gets the mail, once
    assert loop.expand("a@x.org") == ["a@x.org", "b@x.org"]
    assert loop.expand("b@x.org") == ["b@x.org", "a@x.org"]


def test_bare_names_never_apply_to_remote_targets() -> None:
    aliases = Aliases({"fwd": ["bob@remote.org"], "bob": ["local-bob"]})
    assert aliases.expand("fwd@example.com") == ["bob@remote.org"]
    assert aliases.expand("bob@example.com") == ["local-bob@example.com"]
    shared = Aliases({"fwd": ["bob@example.net"], "bob": "b2"}, local_domains=["Example.NET"])
    assert shared.expand("fwd@example.com") == ["b2@example.net"]


def test_a_wide_diamond_expands_in_linear_time() -> None:
    """Each alias is expanded once, however many paths lead to it."""
    table = {f"l{i}": [f"l{i + 1}", f"m{i}"] for i in range(200)}
    table.update({f"m{i}": [f"l{i + 1}"] for i in range(200)})
    result = Aliases(table).expand("l0@x.org")
    assert result == ["l200@x.org"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('prog: "|/usr/bin/vacation bob"\n', "program target"),
        ("prog: |/usr/bin/procmail\n", "program target"),
        ("file: /var/mail/archive\n", "file target"),
        ("inc: :include:missing.txt\n", "cannot read include file"),
        ("  continued\n", "continuation line without an alias"),
        ("no colon here\n", "expected 'name: target"),
        ("dup: a\nDUP: b\n", "already defined on line 2"),
    ],
)
def test_bad_files_are_refused_with_file_and_line(tmp_path: Path, entry: str, message: str) -> None:
    path = tmp_path / "aliases"
    path.write_text("# header\n" + entry)
    with pytest.raises(ConfigError, match=message) as info:
        Aliases.from_file(path)
    assert str(path) in str(info.value)
    if message in ("program target", "file target"):
        assert "run commands or write files" in str(info.value)  # says why


def test_include_loops_and_unreadable_file(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text(":include:b.txt\n")
    (tmp_path / "b.txt").write_text("x, :include:a.txt\n")
    (tmp_path / "aliases").write_text("list: :include:a.txt\n")
    with pytest.raises(ConfigError, match="includes itself"):
        Aliases.from_file(tmp_path / "aliases")
    with pytest.raises(ConfigError, match="aliases file"):
        Aliases.from_file(tmp_path / "missing")
    (tmp_path / "inc.txt").write_text("/etc/passwd\n")
    with pytest.raises(ConfigError, match="file target"):
        Aliases({"list": ":include:inc.txt"}, base_dir=tmp_path)


def test_mapping_values_and_errors(tmp_path: Path) -> None:
    (tmp_path / "list.txt").write_text("a@x.org\nb@x.org # trailing\n")
    aliases = Aliases({"list": [":include:list.txt", "c"]}, base_dir=tmp_path)
    assert aliases.expand("List@Y.org") == ["a@x.org", "b@x.org", "c@y.org"]
    with pytest.raises(ConfigError, match="defined twice"):
        Aliases({"Bob": "x", "bob": "y"})
