"""How openvpn 2.6 reads a configuration, on bytes: options.c's read_config_file, parse_line and
read_inline_file, step for step.

appjail's allow-list (ovpnconf) reads a user's file with this, so that what
it checks is what openvpn acts on. openvpn reads a line in pieces (fgets into
OPTION_LINE_SIZE + 1 bytes at the top level, where a full piece stops it,
and OPTION_LINE_SIZE inside an inline block, where a longer line is several
lines to it), skips a UTF-8
byte-order mark in the first piece, ends a token at a NUL or at any byte C's
isspace() knows (CR, FF and VT included), groups with double or single
quotes, escapes with a backslash outside single quotes, takes `#` or `;` at
a token's start as a comment, drops `--` before a name, keeps at most
MAX_PARMS tokens a line, opens an inline block on a line whose only token is
`<name>` (quoted or not), and ends the block at the first piece that starts,
after blanks, with `</name>` (the rest of that piece is ignored).

Where openvpn gives up on a line (an unclosed quote, a backslash before
anything but a backslash, quote or blank, a parameter too long, a block
without its end) this raises Unreadable: appjail refuses what openvpn would
not run.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

OPTION_LINE_SIZE = 256  # options.h
OPTION_PARM_SIZE = 256
MAX_PARMS = 16
_SPACE = frozenset(b" \t\n\v\f\r")  # C isspace() in the "C" locale
_BOM = b"\xef\xbb\xbf"
_INITIAL, _QUOTED, _UNQUOTED, _DONE, _SQUOTED = range(5)


class Unreadable(Exception):
    """openvpn would stop at this piece: its line number and why."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(problem)
        self.line = line
        self.problem = problem


@dataclass(frozen=True)
class Option:
    """One option as openvpn adds it: its first piece's line, its tokens, an inline block's content."""

    line: int
    words: tuple[bytes, ...]
    inline: bytes | None = None


class _Input:
    """The text and fgets() over it; line numbers are the file's (pieces of one line share it)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.line = 1  # of the next piece

    def gets(self, size: int) -> tuple[int, bytes] | None:
        """fgets(buf, size): up to size - 1 bytes, ending after a newline; None at the end."""
        if self.pos >= len(self.data):
            return None
        limit = min(self.pos + size - 1, len(self.data))
        newline = self.data.find(b"\n", self.pos, limit)
        end = newline + 1 if newline >= 0 else limit
        piece, number = self.data[self.pos:end], self.line
        self.pos = end
        self.line += piece.count(b"\n")
        return number, piece


def _space(byte: int) -> bool:
    return byte == 0 or byte in _SPACE


def parse_line(piece: bytes, line: int) -> list[bytes]:
    """options.c parse_line(): the tokens of one piece (a C string: it ends at a NUL)."""
    words: list[bytes] = []
    state, backslash = _INITIAL, False
    parm = bytearray()
    for byte in piece.split(b"\0", 1)[0] + b"\0":
        out = 0
        if not backslash and byte == 0x5C and state != _SQUOTED:  # '\\'
            backslash = True
        else:
            if state == _INITIAL:
                if not _space(byte):
                    if byte in b";#":  # a comment, escaped or not
                        break
                    if not backslash and byte == 0x22:
                        state = _QUOTED
                    elif not backslash and byte == 0x27:
                        state = _SQUOTED
                    else:
                        out, state = byte, _UNQUOTED
            elif state == _UNQUOTED:
                if not backslash and _space(byte):
                    state = _DONE
                else:
                    out = byte
            elif state == _QUOTED:
                if not backslash and byte == 0x22:
                    state = _DONE
                else:
                    out = byte
            elif state == _SQUOTED:
                if byte == 0x27:
                    state = _DONE
                else:
                    out = byte
            if state == _DONE:
                words.append(bytes(parm))
                state = _INITIAL
                parm.clear()
            if backslash and out and not (out in b'\\"' or _space(out)):
                raise Unreadable(line, "a backslash before something other than a backslash, quote or blank")
            backslash = False
        if out:
            if len(parm) >= OPTION_PARM_SIZE:
                raise Unreadable(line, f"a parameter longer than {OPTION_PARM_SIZE} bytes")
            parm.append(out)
        if len(words) >= MAX_PARMS:
            break
    if state in (_QUOTED, _SQUOTED):
        raise Unreadable(line, "a quotation is not closed")
    if state != _INITIAL:
        raise Unreadable(line, "a line ends inside a token")  # after MAX_PARMS tokens, as openvpn says
    return words


def _inline(source: _Input, name: bytes, line: int) -> bytes:
    """options.c read_inline_file(): pieces up to the first that starts, after blanks, with </name>."""
    close = b"</" + name + b">"
    content = bytearray()
    while (got := source.gets(OPTION_LINE_SIZE)) is not None:
        text = got[1].split(b"\0", 1)[0]  # strncmp() and "%s" both stop at a NUL
        if text.lstrip(bytes(_SPACE)).startswith(close):
            return bytes(content)
        content += text
    raise Unreadable(line, f"<{name.decode(errors='replace')}> has no {close.decode(errors='replace')}")


def read(data: bytes) -> list[Option]:
    """options.c read_config_file() on DATA: the options openvpn would add, in order."""
    return list(options(data))


def options(data: bytes) -> Iterator[Option]:
    """The options of DATA as openvpn reads them, one at a time (it acts on each before reading on)."""
    source = _Input(data)
    first = True
    while (got := source.gets(OPTION_LINE_SIZE + 1)) is not None:
        line, piece = got
        if len(piece.split(b"\0", 1)[0]) == OPTION_LINE_SIZE:
            raise Unreadable(line, f"a line longer than openvpn's {OPTION_LINE_SIZE} bytes")
        if first and piece.startswith(_BOM):
            piece = piece[len(_BOM):]
        first = False
        words = parse_line(piece, line)
        if not words:
            continue
        if len(words[0]) >= 3 and words[0].startswith(b"--"):
            words[0] = words[0][2:]
        name = words[0]
        if len(words) == 1 and name[:1] == b"<" and name[-1:] == b">":
            yield Option(line, (name[1:-1],), _inline(source, name[1:-1], line))
        else:
            yield Option(line, tuple(words))
