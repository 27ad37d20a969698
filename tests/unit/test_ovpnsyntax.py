"""openvpn's reading of a file (ovpnsyntax) and the allow-list built on it: the same directives as openvpn,
whatever the bytes. The exploit of issue 18 first, then the reader's rules, then properties (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appjail import ovpnconf
from appjail.model import ValidationError
from appjail.ovpnsyntax import Option, Unreadable, parse_line, read

from ..ovpnfiles import BLOCKS, CA, client

BASE = ["client", "remote 198.51.100.1 1194", "remote-cert-tls server"]


def names(data: bytes) -> list[str]:
    """What openvpn adds, by name (an inline block as <name>)."""
    return [f"<{o.words[0].decode()}>" if o.inline is not None else o.words[0].decode() for o in read(data)]


def smuggling(directive: str) -> str:
    """Issue 18's file: a 255-byte line in a block, then </extra-certs> on the next: openvpn ends the block
    there (its reads are 255 bytes inside a block), a line-reader does not; a quoted tag reopens it."""
    long_line = "A" * 255
    return client(*BASE, blocks=BLOCKS + f"<extra-certs>\n{long_line}\n</extra-certs>\n{directive}\n"
                                          '"<extra-certs>"\n</extra-certs>\n')


def test_the_exploit_is_what_openvpn_reads_and_is_refused():
    data = smuggling("plugin /home/member/evil.so").encode()
    assert "plugin" in names(data), "openvpn itself would load the plugin"
    with pytest.raises(ValidationError, match=r"^OpenVPN file, line 79: the line is longer than 254 bytes"):
        ovpnconf.parse(data.decode())


@pytest.mark.parametrize(("piece", "words"), [
    (b"remote  a.example 1194 udp # comment", [b"remote", b"a.example", b"1194", b"udp"]),
    (b"verify-x509-name 'CN=a b' name;x", [b"verify-x509-name", b"CN=a b", b"name;x"]),
    (b"; all comment", []),
    (b'a "b c"d', [b"a", b"b c", b"d"]),  # a closing quote ends the token
    (b'a b"c', [b"a", b'b"c']),  # a quote inside a word is a character
    (b"a\\ b c", [b"a b", b"c"]),
    (b"a \\#b", [b"a"]),  # an escaped # at a token's start is still a comment
    (b"a\rplugin x", [b"a", b"plugin", b"x"]),  # CR is a blank: one line to openvpn
    (b"a\x0cb\x0bc", [b"a", b"b", b"c"]),
    (b"a b\x00plugin x", [b"a", b"b"]),  # a NUL ends the C string
    (b" ".join(b"w%d" % i for i in range(20)), [b"w%d" % i for i in range(16)]),
])
def test_a_line_splits_as_openvpn_splits_it(piece, words):
    assert parse_line(piece, 1) == words


@pytest.mark.parametrize("piece", [b"a 'b", b'a "b', b"a \\x", b"a " + b"x" * 257])
def test_what_openvpn_refuses_to_read_is_unreadable(piece):
    with pytest.raises(Unreadable):
        parse_line(piece, 1)


def test_reads_are_pieces_a_bom_is_skipped_and_dashes_dropped():
    assert read(b"\xef\xbb\xbf--client\n") == [Option(1, (b"client",))]
    # inside a block a 300-byte line is two lines to openvpn: the second may end the block
    assert names(b"<ca>\n" + b"x" * 255 + b"</ca>\nplugin /e.so\n") == ["<ca>", "plugin"]
    with pytest.raises(Unreadable, match="longer than openvpn's 256 bytes"):  # at the top level it stops
        read(b"x" * 256 + b"plugin /e.so\n")
    assert read(b'"<ca>"\nbody\n  </ca> ignored\nclient\n') == [Option(1, (b"ca",), b"body\n"), Option(4, (b"client",))]
    assert read(b"--<ca>\nbody\n</ca>\n")[0].inline == b"body\n"
    with pytest.raises(Unreadable, match="<ca> has no </ca>"):
        read(b"<ca>\nbody\n")


# -- properties: whatever the bytes, the allow-list and openvpn agree ---------------------------

_ALLOWED = set(ovpnconf.PASSED) | set(ovpnconf.DROPPED)
_PIECES = st.sampled_from([
    "plugin /tmp/x.so", "config /etc/shadow", "--plugin x", "up /bin/sh", "script-security 2", "lport 53",
    "</ca>", "<ca>", '"<ca>"', "'<ca>'", "</extra-certs>", "<extra-certs>", '"<extra-certs>"', "--<ca>",
    "A" * 254, "A" * 255, "A" * 300, "cipher AES-256-GCM", "nobind", "port 443", "# comment", "; c",
    "\\", '"', "'", "verify-x509-name 'CN=a b' name", "a\rplugin x", "a\x00plugin x", "\x0cplugin x",
    " </ca>", "\t</ca>x", "remote 198.51.100.2", "dev tun", "persist-tun", "MIIB" * 16, "",
])
# every text UTF-8 can carry (no surrogates); blacklist_categories: Debian 12's hypothesis 6.67 has no codec=
_UTF8 = st.characters(blacklist_categories=("Cs",))
_LINES = st.lists(st.one_of(_PIECES, st.text(alphabet=_UTF8, max_size=300)), max_size=12)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(before=_LINES, inside=_LINES, after=_LINES, crlf=st.booleans())
def test_an_accepted_file_holds_for_openvpn_only_allowed_directives(before, inside, after, crlf):
    text = "\n".join([*BASE, *before, "<ca>", CA, *inside, "</ca>", *after, *BLOCKS.splitlines()[10:]]) + "\n"
    if crlf:
        text = text.replace("\n", "\r\n")
    try:
        config = ovpnconf.parse(text)
    except ValidationError:
        return
    for option in read(text.encode()):  # the user's own bytes, as openvpn would read them
        name = option.words[0].decode()
        assert (name in ovpnconf.INLINE) if option.inline is not None else (name in _ALLOWED), name
    rebuilt = read(config.config_text().encode())
    assert [o.words[0].decode() for o in rebuilt if o.inline is None] == [name for name, _ in config.directives]
    assert {o.words[0].decode() for o in rebuilt if o.inline is not None} == set(config.blocks)


@given(st.lists(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e, blacklist_characters='"\\'),
                        min_size=1, max_size=40), min_size=1, max_size=16))
def test_a_rebuilt_line_reads_back_as_its_words(words):
    words = [w for w in words if w.strip() == w and w[0] not in "#;'"] or ["x"]
    line = " ".join(ovpnconf._quoted(word) for word in words)
    assert parse_line(line.encode(), 1) == [word.encode() for word in words]
