"""Mbox quotes and converts a message block by block exactly as it would whole.

The reference is the whole-message transformation (CRLF to LF, then mboxrd
``>From `` quoting); blocks are made tiny so that lines, CRLF pairs and
``>>From `` prefixes fall across block boundaries.
"""

from __future__ import annotations

import io
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastsmtp.handlers.mbox as mbox_module

HEADER = b"Return-Path: <a@example.com>\r\n"
PIECES = [b"\r\n", b"\r", b"\n", b">", b"From ", b"Fro", b"m ", b"x", b"From", b" "]


def whole(content: bytes) -> bytes:
    text = (HEADER + content).replace(b"\r\n", b"\n")
    text = re.sub(rb"^>*From ", rb">\g<0>", text, flags=re.MULTILINE)
    return text + (b"\n" if text.endswith(b"\n") else b"\n\n")


def in_blocks(content: bytes) -> bytes:
    entry = mbox_module._entry("a@example.com", io.BytesIO(content))
    next(entry)  # the From line, with today's date
    return b"".join(entry)


@pytest.mark.parametrize("block", [1, 2, 3, 5, 8, 64])
@settings(max_examples=150, deadline=None)
@given(parts=st.lists(st.sampled_from(PIECES), max_size=60))
def test_blocks_give_the_whole_message_transformation(block, parts):
    content = b"".join(parts)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mbox_module, "_BLOCK", block)
        assert in_blocks(content) == whole(content)


def test_a_line_longer_than_a_block_is_not_quoted_in_its_middle(monkeypatch):
    monkeypatch.setattr(mbox_module, "_BLOCK", 8)
    content = b"x" * 20 + b"From not a line start\r\n>From quoted\r\n"
    assert in_blocks(content) == whole(content)
    assert b"\n>>From quoted\n" in in_blocks(content)
