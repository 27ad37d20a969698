"""ovpnsyntax against the real openvpn: for generated files, the first option openvpn does not know is
the one appjail's reader finds first, and a file openvpn cannot read is one appjail's reader refuses.

openvpn reads the file on its standard input as the helper's openvpn does (`--config stdin`) and stops
after reading (`--show-ciphers`), run as nobody: nothing in these files loads or opens anything.
"""

from __future__ import annotations

import re
import subprocess

from hypothesis import given, settings
from hypothesis import strategies as st

from appjail.ovpnsyntax import Unreadable, options

KNOWN = {"verb", "ca", "extra-certs"}
_UNKNOWN = re.compile(r"Unrecognized option or missing or extra parameter\(s\) in stdin:\d+: (\S+)")
_LINES = st.lists(st.sampled_from([
    "verb 3", "zz1 a", "--zz2", "<ca>", "</ca>", '"<ca>"', "'<ca>'", " </ca>x", "<extra-certs>",
    "</extra-certs>", "A" * 254, "B" * 255, "C" * 300, "# c", "; c", "zz3\rzz4", "zz5\x0czz6", "zz7 'a b' \\\\",
    '"zz8', "zz9 \\x", "\\#zz10", "verb 3 \x00 zz11", "\ufeffzz12", "ZZ" * 130 + "zz13",
]), min_size=1, max_size=10)


def openvpn_reads(data: bytes) -> str:
    """What openvpn says after reading DATA: the first unknown option's name, "unreadable" or "ok"."""
    result = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "openvpn",
                             "--config", "stdin", "--show-ciphers"], input=data, capture_output=True, timeout=10)
    output = (result.stdout + result.stderr).decode(errors="replace")
    found = _UNKNOWN.search(output)
    if found:
        return found.group(1)
    return "ok" if "AES-256-GCM" in output else "unreadable"


def appjail_reads(data: bytes) -> str:
    """The same from ovpnsyntax, which like openvpn stops at the first option it cannot take."""
    try:
        for option in options(data):
            if (name := option.words[0].decode(errors="replace")) not in KNOWN:
                return name
    except Unreadable:
        return "unreadable"
    return "ok"


@settings(max_examples=120, deadline=None)
@given(_LINES)
def test_appjail_reads_a_file_as_openvpn_does(lines):
    data = "\n".join(lines).encode() + b"\n"
    assert appjail_reads(data) == openvpn_reads(data), data
