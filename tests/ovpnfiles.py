"""OpenVPN client files for the tests: inline blocks shaped like real ones (PEM, static keys)."""

from __future__ import annotations

import base64
import hashlib


def pem(label: str, seed: str, size: int = 300) -> str:
    """A PEM section of LABEL whose body is SIZE bytes derived from SEED (not a real certificate)."""
    body = b"".join(hashlib.sha256(f"{seed}{i}".encode()).digest() for i in range(size // 32 + 1))[:size]
    encoded = base64.b64encode(body).decode()
    lines = [encoded[i:i + 64] for i in range(0, len(encoded), 64)]
    return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----"])


def static_key(seed: str) -> str:
    """An OpenVPN static key (tls-auth, tls-crypt): 16 lines of 32 hexadecimal digits."""
    digits = "".join(hashlib.sha256(f"{seed}{i}".encode()).hexdigest() for i in range(8))
    return "\n".join(["#", "# 2048 bit OpenVPN static key", "#", "-----BEGIN OpenVPN Static key V1-----",
                      *(digits[i:i + 32] for i in range(0, 512, 32)), "-----END OpenVPN Static key V1-----"])


CA = pem("CERTIFICATE", "ca")
CERT = pem("CERTIFICATE", "cert")
KEY = pem("PRIVATE KEY", "key", 1200)
TLS_CRYPT = static_key("ta")
# the key's body line that is in no other block: what must never leak
KEY_SECRET = KEY.splitlines()[3]
BLOCKS = f"<ca>\n{CA}\n</ca>\n<cert>\n{CERT}\n</cert>\n<key>\n{KEY}\n</key>\n<tls-crypt>\n{TLS_CRYPT}\n</tls-crypt>\n"


def client(*directives: str, blocks: str = BLOCKS) -> str:
    """A client file with DIRECTIVES (one a line) and then BLOCKS."""
    return "".join(f"{line}\n" for line in directives) + blocks
