"""An OpenVPN file's inline blocks (<ca>, <key>, <tls-crypt>...) checked by what they hold, and rebuilt.

A block passes only as the kind of data its directive takes: PEM sections
with the labels that directive reads (text outside them, such as the dump
easy-rsa writes above a certificate, is dropped), an OpenVPN static key as
hex, a PKCS#12 bundle as base64, SHA-256 fingerprints, or a user name and
password. What openvpn gets is rebuilt from what was checked, line by line,
with no line that could end a block or open one.
"""

from __future__ import annotations

import re
from collections.abc import Callable

MAX_LINE = 254  # bytes before the newline: every line fits one of openvpn's 255-byte reads

_BASE64 = re.compile(rb"[A-Za-z0-9+/]+={0,2}")
_HEX = re.compile(rb"[0-9A-Fa-f]+")
_FINGERPRINT = re.compile(rb"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){31}")
_PEM_HEADER = re.compile(rb"(Proc-Type|DEK-Info): [A-Za-z0-9,-]+")
_STATIC_KEY = b"OpenVPN Static key V1"
_STATIC_KEY_HEX = 512  # 2048 bits


class BadBlock(ValueError):
    """What is wrong with the content, in words for a sentence about the block."""


def _lines(content: bytes) -> list[bytes]:
    return [line.strip() for line in content.split(b"\n")]


def _pem(content: bytes, labels: tuple[bytes, ...], most: int = 64) -> bytes:
    """The PEM sections of CONTENT (labels among LABELS), canonical; at least one, at most MOST."""
    sections: list[list[bytes]] = []
    section: list[bytes] | None = None
    label = b""
    for line in _lines(content):
        if section is None:
            match = re.fullmatch(rb"-----BEGIN ([A-Za-z0-9 -]+)-----", line)
            if match:
                label = match.group(1)
                if label not in labels:
                    raise BadBlock(f"holds a {label.decode()}, not {' or '.join(x.decode() for x in labels)}")
                section = [line]
            continue  # text around the sections is not passed on
        if line == b"-----END " + label + b"-----":
            sections.append([*section, line])
            section = None
        elif _BASE64.fullmatch(line) or _PEM_HEADER.fullmatch(line) or not line:
            section.append(line)
        else:
            raise BadBlock(f"has a line in its {label.decode()} that is not base64")
    if section is not None:
        raise BadBlock(f"has a {label.decode()} without its END line")
    if not sections:
        raise BadBlock(f"holds no {' or '.join(x.decode() for x in labels)}")
    if len(sections) > most:
        raise BadBlock(f"holds more than {most} sections")
    return b"\n".join(line for section in sections for line in section if line) + b"\n"


def _static_key(content: bytes) -> bytes:
    """An OpenVPN static key (tls-auth, tls-crypt): 2048 bits of hex between its BEGIN and END lines."""
    begin, end = b"-----BEGIN " + _STATIC_KEY + b"-----", b"-----END " + _STATIC_KEY + b"-----"
    lines = [line for line in _lines(content) if line and not line.startswith(b"#")]
    if lines[:1] != [begin] or lines[-1:] != [end]:
        raise BadBlock("is not an OpenVPN static key (-----BEGIN OpenVPN Static key V1----- ... END)")
    body = lines[1:-1]
    if not all(_HEX.fullmatch(line) for line in body) or sum(map(len, body)) != _STATIC_KEY_HEX:
        raise BadBlock(f"is not {_STATIC_KEY_HEX} hexadecimal digits between its BEGIN and END lines")
    return b"\n".join(lines) + b"\n"


def _base64(content: bytes) -> bytes:
    lines = [line for line in _lines(content) if line]
    if not lines or not all(_BASE64.fullmatch(line) for line in lines):
        raise BadBlock("is not base64")
    return b"\n".join(lines) + b"\n"


def _fingerprints(content: bytes) -> bytes:
    lines = [line for line in _lines(content) if line and not line.startswith(b"#")]
    if not lines or not all(_FINGERPRINT.fullmatch(line) for line in lines):
        raise BadBlock("is not SHA-256 fingerprints (32 hexadecimal pairs joined by colons), one a line")
    return b"\n".join(lines) + b"\n"


def _credentials(content: bytes) -> bytes:
    """A user name on one line and a password on the next, as they are (a password may hold anything
    printable); neither may start with '<', which openvpn could read as a tag."""
    lines = content.split(b"\n")
    if lines[-1:] == [b""]:
        lines.pop()
    lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    if not 1 <= len(lines) <= 2 or not lines[0].strip():
        raise BadBlock("needs a user name on one line and a password on the next")
    if any(line.lstrip(b" \t")[:1] == b"<" for line in lines):
        raise BadBlock("has a user name or password starting with '<'")
    return b"\n".join(lines) + b"\n"


_CERTIFICATES = (b"CERTIFICATE", b"TRUSTED CERTIFICATE", b"X509 CERTIFICATE")
_KEYS = (b"PRIVATE KEY", b"RSA PRIVATE KEY", b"EC PRIVATE KEY", b"ENCRYPTED PRIVATE KEY", b"EC PARAMETERS")

CHECKS: dict[str, Callable[[bytes], bytes]] = {
    "ca": lambda content: _pem(content, _CERTIFICATES, most=256),
    "extra-certs": lambda content: _pem(content, _CERTIFICATES),
    "cert": lambda content: _pem(content, (b"CERTIFICATE",)),
    "key": lambda content: _pem(content, _KEYS, most=2),
    "crl-verify": lambda content: _pem(content, (b"X509 CRL",)),
    "tls-auth": _static_key,
    "tls-crypt": _static_key,
    "tls-crypt-v2": lambda content: _pem(content, (b"OpenVPN tls-crypt-v2 client key",), most=1),
    "pkcs12": _base64,
    "peer-fingerprint": _fingerprints,
    "auth-user-pass": _credentials,
}
