"""An OpenVPN client file (.ovpn), checked against an allow-list and rebuilt for openvpn.

The CLI reads the file as the user and sends its text (`inline_auth_user_pass`
first puts the file an `auth-user-pass FILE` line names inline, read as the
user too); the helper parses it here and trusts nothing in it. Only
directives a client tunnel needs are known: anything that runs a program
(up, script-security, plugin...), opens a control socket (management) or
writes or reads a host path (log, status, cd, chroot, a key given as a
file...) or holds a host port (lport, bind) is refused, like any unknown
directive, with one sentence naming the line.

The file is read exactly as openvpn reads it (ovpnsyntax: bytes, its
pieces of 256 bytes, quoting, escapes, block ends), and refused where a
reader of lines could see it otherwise: a line longer than one of openvpn's
reads, a control character, a backslash outside a block, a tag not alone on
its line, a block line starting with '<'. Blocks pass only as the data
their directive takes (ovpnblocks). openvpn gets `config_text()`: the
directives and blocks rebuilt from what was checked, never the user's text,
read back the way openvpn will read it and compared, on its standard input,
so the keys are in no file and no argv.

`parse_up` checks what openvpn reports when its tunnel comes up (the `--up`
hook's environment, relayed by appjail's own hook): the address, MTU and
the pushed `dhcp-option DNS` servers.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from collections import namedtuple
from collections.abc import Callable

from . import ovpnblocks, ovpnsyntax
from .model import MAX_DNS_SERVERS, ValidationError, is_address, is_hostname

MAX_TEXT = 64 * 1024
MAX_REMOTES = 16
DEFAULT_PORT = 1194
MIN_MTU, MAX_MTU = 576, 9000

# Tokens passed on bare; anything else is quoted (a token with a quote or a
# backslash is refused: openvpn's own escaping is never needed by a client file).
_BARE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:/@=+,-")
_WORD = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:+-")


def _fail(line: int, problem: str) -> ValidationError:
    return ValidationError(f"OpenVPN file, line {line}: {problem}")


# -- argument checks: (line, args) -> args as passed on --------------------------

Check = Callable[[int, str, list[str]], list[str]]


def _count(low: int, high: int, each: Callable[[int, str, str], str] | None = None) -> Check:
    def check(line: int, name: str, args: list[str]) -> list[str]:
        if not low <= len(args) <= high:
            wanted = f"{low}" if low == high else f"{low} to {high}"
            raise _fail(line, f"{name} takes {wanted} arguments, not {len(args)}")
        return [each(line, name, arg) for arg in args] if each else args
    return check


def _number(line: int, name: str, arg: str) -> str:
    if not (arg.isascii() and arg.isdigit() and len(arg) <= 10):
        raise _fail(line, f"{name} {arg!r} is not a number")
    return arg


def _word(line: int, name: str, arg: str) -> str:
    if not arg or not set(arg) <= _WORD:
        raise _fail(line, f"{name} {arg[:40]!r} is not a name such as AES-256-GCM")
    return arg


def _choice(*choices: str) -> Callable[[int, str, str], str]:
    def check(line: int, name: str, arg: str) -> str:
        if arg not in choices:
            raise _fail(line, f"{name} {arg[:40]!r} is not one of {', '.join(choices)}")
        return arg
    return check


def _numbers(low: int, high: int) -> Check:
    return _count(low, high, _number)


def _words(low: int, high: int) -> Check:
    return _count(low, high, _word)


_PROTOCOLS = ("udp", "udp4", "udp6", "tcp", "tcp4", "tcp6", "tcp-client", "tcp4-client", "tcp6-client")


def _remote(line: int, name: str, args: list[str]) -> list[str]:
    _count(1, 3)(line, name, args)
    if not (is_hostname(args[0]) or is_address(args[0])):
        raise _fail(line, f"remote {args[0][:40]!r} is neither a host name nor an address")
    if len(args) > 1 and not (args[1].isdigit() and 1 <= int(args[1]) <= 65535):
        raise _fail(line, f"remote port {args[1][:40]!r} is not a number from 1 to 65535")
    if len(args) > 2:
        _choice(*_PROTOCOLS)(line, "remote protocol", args[2])
    return args


def _dev(line: int, name: str, args: list[str]) -> list[str]:
    _count(1, 1)(line, name, args)
    if not (args[0] == "tun" or args[0].startswith("tun") and args[0][3:].isdigit()):
        raise _fail(line, f"dev {args[0][:40]!r}: appjail makes a tun device only (tap is not supported)")
    return args


def _dhcp_option(line: int, name: str, args: list[str]) -> list[str]:
    _count(2, 2)(line, name, args)
    if args[0] in ("DNS", "DNS6"):
        if not is_address(args[1]):
            raise _fail(line, f"dhcp-option {args[0]} {args[1][:40]!r} is not an address")
    elif args[0] in ("DOMAIN", "DOMAIN-SEARCH", "ADAPTER_DOMAIN_SUFFIX"):
        if not is_hostname(args[1]):
            raise _fail(line, f"dhcp-option {args[0]} {args[1][:40]!r} is not a domain")
    else:
        raise _fail(line, f"dhcp-option {args[0][:40]!r} is not DNS, DNS6 or DOMAIN")
    return args


def _text(line: int, name: str, args: list[str]) -> list[str]:
    """Free text such as verify-x509-name's subject or pull-filter's match: quoted on the way out."""
    return _count(1, 3)(line, name, args)


def _inline_only(line: int, name: str, args: list[str]) -> list[str]:
    if args:
        raise _fail(line, f"{name} names a file ({args[0][:40]}), which the helper never opens: "
                          f"put its content inline as <{name}>...</{name}>")
    return args


# Directives passed on to openvpn, with the check of their arguments.
PASSED: dict[str, Check] = {
    "client": _count(0, 0), "tls-client": _count(0, 0), "pull": _count(0, 0), "nobind": _count(0, 0),
    "persist-key": _count(0, 0), "remote-random": _count(0, 0), "remote-random-hostname": _count(0, 0),
    "float": _count(0, 0), "fast-io": _count(0, 0), "mute-replay-warnings": _count(0, 0),
    "route-nopull": _count(0, 0), "ifconfig-nowarn": _count(0, 0),
    "remote": _remote, "proto": _count(1, 1, _choice(*_PROTOCOLS)), "port": _numbers(1, 1),
    "rport": _numbers(1, 1),
    "resolv-retry": _count(1, 1, lambda line, name, arg: arg if arg == "infinite" else _number(line, name, arg)),
    "connect-retry": _numbers(1, 2), "connect-retry-max": _numbers(1, 1), "connect-timeout": _numbers(1, 1),
    "server-poll-timeout": _numbers(1, 1), "hand-window": _numbers(1, 1), "tls-timeout": _numbers(1, 1),
    "tran-window": _numbers(1, 1), "ping": _numbers(1, 1), "ping-restart": _numbers(1, 1),
    "ping-exit": _numbers(1, 1), "keepalive": _numbers(2, 2), "inactive": _numbers(1, 2),
    "explicit-exit-notify": _numbers(0, 1), "reneg-sec": _numbers(1, 2), "reneg-bytes": _numbers(1, 1),
    "reneg-pkts": _numbers(1, 1), "replay-window": _numbers(1, 2), "sndbuf": _numbers(1, 1),
    "rcvbuf": _numbers(1, 1), "tun-mtu": _numbers(1, 1), "tun-mtu-extra": _numbers(1, 1),
    "link-mtu": _numbers(1, 1), "fragment": _numbers(1, 2), "mssfix": _count(0, 2),
    "remote-cert-tls": _count(1, 1, _choice("server")), "verify-x509-name": _text,
    "key-direction": _count(1, 1, _choice("0", "1")), "cipher": _words(1, 1), "data-ciphers": _words(1, 1),
    "data-ciphers-fallback": _words(1, 1), "ncp-ciphers": _words(1, 1), "auth": _words(1, 1),
    "tls-cipher": _words(1, 1), "tls-ciphersuites": _words(1, 1), "tls-groups": _words(1, 1),
    "ecdh-curve": _words(1, 1), "tls-cert-profile": _words(1, 1), "tls-version-min": _words(1, 2),
    "tls-version-max": _words(1, 1), "comp-lzo": _count(0, 1, _choice("yes", "no", "adaptive")),
    "compress": _count(0, 1, _choice("lzo", "lz4", "lz4-v2", "stub", "stub-v2")),
    "allow-compression": _count(1, 1, _choice("no", "asym", "yes")),
    "auth-retry": _count(1, 1, _choice("none", "nointeract")), "pull-filter": _text,
    "topology": _count(1, 1, _choice("subnet", "net30", "p2p")), "dhcp-option": _dhcp_option,
    # key material: inline blocks only
    "ca": _inline_only, "cert": _inline_only, "key": _inline_only, "extra-certs": _inline_only,
    "pkcs12": _inline_only, "crl-verify": _inline_only, "tls-auth": _inline_only,
    "tls-crypt": _inline_only, "tls-crypt-v2": _inline_only, "auth-user-pass": _inline_only,
    "peer-fingerprint": _inline_only,
}
# Accepted and left out: appjail decides these (its own tun device, routes and resolver, the log).
DROPPED: dict[str, Check] = {
    "dev": _dev, "dev-type": _count(1, 1, _choice("tun")), "verb": _numbers(1, 1), "mute": _numbers(1, 1),
    "persist-tun": _count(0, 0), "auth-nocache": _count(0, 0), "redirect-gateway": _count(0, 4),
    "route": _count(1, 4), "route-ipv6": _count(1, 3), "route-delay": _numbers(0, 2),
    "route-method": _count(1, 1), "block-outside-dns": _count(0, 0), "register-dns": _count(0, 0),
}
# `port` sets the local port too; appjail forces nobind, so only the server's port is passed on.
RENAMED = {"port": "rport"}
INLINE = ("ca", "cert", "key", "extra-certs", "pkcs12", "crl-verify", "tls-auth", "tls-crypt", "tls-crypt-v2",
          "auth-user-pass", "peer-fingerprint")

_RUNS = "runs a program on the host"
_WRITES = "writes a file on the host"
_FILE = "reads a file of the host"
FORBIDDEN: dict[str, str] = {
    **dict.fromkeys(("up", "down", "route-up", "route-pre-down", "ipchange", "client-connect",
                     "client-disconnect", "learn-address", "tls-verify", "auth-user-pass-verify",
                     "tls-crypt-v2-verify", "iproute"), _RUNS),
    "script-security": "would let the file run programs on the host",
    "plugin": "loads a module into openvpn", "providers": "loads a module into openvpn",
    "engine": "loads a module into openvpn", "pkcs11-providers": "loads a module into openvpn",
    **dict.fromkeys(("management", "management-client", "management-hold", "management-query-passwords",
                     "management-external-key", "management-external-cert", "management-client-auth",
                     "management-forget-disconnect", "management-signal"), "opens a control socket"),
    **dict.fromkeys(("log", "log-append", "status", "writepid", "replay-persist", "tmp-dir",
                     "tls-export-cert"), _WRITES),
    "syslog": "sends the log elsewhere (it goes to appjail's helper)",
    "daemon": "would detach openvpn from appjail's helper",
    **dict.fromkeys(("cd", "chroot", "config", "askpass", "dev-node", "secret", "http-proxy-user-pass"), _FILE),
    **dict.fromkeys(("user", "group"), "changes openvpn's user (appjail runs it)"),
    **dict.fromkeys(("setenv", "setenv-safe", "ignore-unknown-option"), "changes how openvpn reads options"),
    **dict.fromkeys(("lport", "bind"), "would hold a port on the host (appjail's openvpn never binds one)"),
    **dict.fromkeys(("ifconfig", "ifconfig-ipv6", "lladdr", "route-gateway", "mark", "bind-dev", "local"),
                    "configures the host's network"),
    **dict.fromkeys(("server", "mode", "tls-server", "client-config-dir"), "is for a server"),
}


def _quoted(token: str) -> str:
    return token if token and set(token) <= _BARE else f'"{token}"'


class OpenVpnConfig(namedtuple("OpenVpnConfig", "directives blocks remotes dns")):
    """directives: ((name, args), ...) passed on; blocks: {name: content}; remotes: "host:port/proto"."""

    __slots__ = ()

    def config_text(self) -> str:
        """openvpn's configuration, keys included: for its standard input, never a file."""
        lines = [" ".join([name, *map(_quoted, args)]) for name, args in self.directives]
        for name, content in self.blocks.items():
            lines += [f"<{name}>", content.rstrip("\n"), f"</{name}>"]
        return "\n".join(lines) + "\n"

    def summary(self) -> dict:
        """What may be recorded and shown: the remotes and the CA's fingerprint, no key.

        `addresses` are what the server pushes, filled in once the tunnel is up.
        """
        return {"type": "openvpn", "implementation": "openvpn", "endpoint": ",".join(self.remotes),
                "peer": self.peer(), "addresses": []}

    def peer(self) -> str:
        """Who the tunnel trusts: the CA (or the pinned fingerprint), as a short fingerprint."""
        trusted = self.blocks.get("ca") or self.blocks.get("peer-fingerprint") or self.blocks.get("pkcs12", "")
        return "sha256:" + hashlib.sha256(trusted.encode()).hexdigest()[:16]


def parse(text: object) -> OpenVpnConfig:
    """The file's text (as sent by the CLI) to a validated config, read as openvpn reads it;
    ValidationError names the line."""
    data = _encoded(text)
    lines = _checked_lines(data)
    try:
        options = ovpnsyntax.read(data)
    except ovpnsyntax.Unreadable as exc:
        raise _fail(exc.line, f"openvpn would not read it: {exc.problem}") from None
    directives: list[tuple[str, list[str]]] = []
    blocks: dict[str, str] = {}
    seen: dict[str, int] = {}
    for option in options:
        if option.inline is not None:
            name = _ascii(option.line, option.words[0])
            blocks[name] = _block(option.line, name, option.inline, lines, blocks)
            continue
        if b"\\" in lines[option.line - 1]:
            raise _fail(option.line, "a backslash outside a block is not supported")
        name, *args = (_plain(option.line, _ascii(option.line, word)) for word in option.words)
        if name in FORBIDDEN:
            raise _fail(option.line, f"{name} {FORBIDDEN[name]}, which appjail does not allow: remove the line")
        check = PASSED.get(name) or DROPPED.get(name)
        if check is None:
            raise _fail(option.line, f"unknown directive {name[:40]!r}")
        args = check(option.line, name, args)
        seen.setdefault(name, option.line)
        if name in PASSED and name not in INLINE:
            directives.append((RENAMED.get(name, name), args))
    end = len(lines) - (lines[-1] == b"") or 1
    remotes = [_remote_text(args, directives) for name, args in directives if name == "remote"]
    if not remotes:
        raise _fail(end, "the file names no server: add a line 'remote HOST [PORT]'")
    if len(remotes) > MAX_REMOTES:
        raise _fail(end, f"more than {MAX_REMOTES} remote lines")
    for name in sorted(seen.keys() & set(INLINE) - blocks.keys(), key=seen.__getitem__):
        if name == "auth-user-pass":
            raise _fail(seen[name], "auth-user-pass has no user name and password "
                                    "(name a file of yours after it, or add <auth-user-pass>)")
        raise _fail(seen[name], f"{name} has no content: add it inline as <{name}>...</{name}>")
    if not ({"ca", "pkcs12", "peer-fingerprint"} & blocks.keys()):
        raise _fail(end, "the file ends without a <ca> block (the server's certificate authority, inline)")
    if ("cert" in blocks) != ("key" in blocks):
        raise _fail(end, "the file has a <cert> without a <key> or a <key> without a <cert>")
    if not {"cert", "pkcs12", "auth-user-pass"} & blocks.keys():
        raise _fail(end, "the file has neither <cert> and <key> nor auth-user-pass: how would it log in?")
    dns = tuple(dict.fromkeys(args[1] for name, args in directives if name == "dhcp-option"
                              and args[0] == "DNS" and ipaddress.ip_address(args[1]).version == 4))
    # an inline block is its directive: `<ca>...</ca>` alone sets --ca
    config = OpenVpnConfig(tuple((name, tuple(args)) for name, args in directives), blocks, tuple(remotes),
                           dns[:MAX_DNS_SERVERS])
    _check_rebuilt(config)
    return config


def _encoded(text: object) -> bytes:
    if not isinstance(text, str):
        raise ValidationError("invalid OpenVPN file: expected its text")
    try:
        data = text.encode()
    except UnicodeError:
        raise ValidationError("invalid OpenVPN file: it is not UTF-8 text") from None
    if len(data) > MAX_TEXT:
        raise ValidationError(f"invalid OpenVPN file: longer than {MAX_TEXT} bytes")
    return data


def _checked_lines(data: bytes) -> list[bytes]:
    """The file's lines (CRLF or LF ends), each short enough to be one of openvpn's reads, with no
    byte that openvpn and a reader of lines could take differently (NUL, a lone CR, FF, VT...)."""
    lines = data.split(b"\n")
    for number, line in enumerate(lines, 1):
        line = line[:-1] if line.endswith(b"\r") else line
        if len(line) > ovpnblocks.MAX_LINE:
            raise _fail(number, f"the line is longer than {ovpnblocks.MAX_LINE} bytes, "
                                "which openvpn would read as several lines")
        bad = next((byte for byte in line if (byte < 0x20 and byte != 0x09) or byte == 0x7F), None)
        if bad is not None:
            raise _fail(number, f"the line holds the control character 0x{bad:02x}")
    return lines


def _ascii(line: int, word: bytes) -> str:
    try:
        return word.decode("ascii")
    except UnicodeDecodeError:
        raise _fail(line, f"{word.decode(errors='replace')[:40]!r} is not ASCII") from None


def _plain(line: int, word: str) -> str:
    """A token as it may be passed on: printable, without the quote and backslash of openvpn's syntax."""
    if not word.isprintable() or '"' in word or "\\" in word:
        raise _fail(line, f"{word[:40]!r}: quotes inside a word are not supported")
    return word


def _block(line: int, name: str, content: bytes, lines: list[bytes], blocks: dict[str, str]) -> str:
    """An inline block's content, checked by type and rebuilt; its tags alone on their lines."""
    if name not in INLINE:
        raise _fail(line, f"unknown inline block <{name[:40]}>")
    if name in blocks:
        raise _fail(line, f"<{name}> is given twice")
    close = line + 1 + content.count(b"\n")
    if lines[line - 1].strip() != f"<{name}>".encode():
        raise _fail(line, f"write <{name}> alone on its line, without quotes")
    if lines[close - 1].strip() != f"</{name}>".encode():
        raise _fail(close, f"write </{name}> alone on its line")
    for offset, text in enumerate(content.split(b"\n")):
        if text.lstrip(b" \t\r").startswith(b"<"):
            raise _fail(line + 1 + offset, f"<{name}> from line {line} is not closed before this tag")
    try:
        checked = ovpnblocks.CHECKS[name](content)
    except ovpnblocks.BadBlock as exc:
        raise _fail(line, f"<{name}> {exc}") from None
    return checked.decode()


def _check_rebuilt(config: OpenVpnConfig) -> None:
    """What openvpn will read (config_text) must give exactly the directives and blocks checked here."""
    read = [(option.words[0].decode(errors="replace"), option.inline) if option.inline is not None
            else (option.words[0].decode(errors="replace"), tuple(w.decode(errors="replace") for w in option.words[1:]))
            for option in ovpnsyntax.read(config.config_text().encode())]
    wanted = [*config.directives, *((name, content.encode()) for name, content in config.blocks.items())]
    if read != wanted:
        raise ValidationError("invalid OpenVPN file: appjail could not rebuild it faithfully for openvpn")


def _remote_text(args: list[str], directives: list[tuple[str, list[str]]]) -> str:
    port = args[1] if len(args) > 1 else next((a[0] for n, a in directives if n in ("port", "rport")),
                                                str(DEFAULT_PORT))
    proto = args[2] if len(args) > 2 else next((a[0] for n, a in directives if n == "proto"), "udp")
    host = f"[{args[0]}]" if ":" in args[0] else args[0]
    return f"{host}:{port}/{proto}"


# -- the CLI's side: auth-user-pass FILE, read as the user ------------------------

def prepare(text: str, path: str, read: Callable[[str, str], str]) -> str:
    """What the CLI sends for `--openvpn PATH`: the text with its auth-user-pass file inline, checked
    here already (the helper checks again), so a bad file fails before any bus call."""
    text = inline_auth_user_pass(text, path, read)
    parse(text)
    return text


def inline_auth_user_pass(text: str, path: str, read: Callable[[str, str], str]) -> str:
    """The text with its `auth-user-pass FILE` line's file put inline (read(FILE, what) as the user).

    The line keeps its place (as `auth-user-pass`) and the block goes at the
    end, so every other line keeps its number for the helper's messages. A
    relative FILE is relative to the config file's directory. The line is
    found as openvpn finds it; a file openvpn cannot read is left for parse()
    to explain.
    """
    data = _encoded(text)
    try:
        options = ovpnsyntax.read(data)
    except ovpnsyntax.Unreadable:
        return text
    for option in options:
        if option.inline is None and len(option.words) == 2 and option.words[0] == b"auth-user-pass":
            where = os.path.join(os.path.dirname(os.path.abspath(os.path.expanduser(path))),
                                 os.path.expanduser(option.words[1].decode(errors="replace")))
            credentials = read(where, f"auth-user-pass (line {option.line})")
            try:
                ovpnblocks.CHECKS["auth-user-pass"](_encoded(credentials))
            except ovpnblocks.BadBlock as exc:
                raise _fail(option.line, f"the auth-user-pass file {exc}") from None
            lines = text.split("\n")
            lines[option.line - 1] = "auth-user-pass"
            body = "\n".join(lines).rstrip("\n")
            return "\n".join([body, "<auth-user-pass>", credentials.rstrip("\n"), "</auth-user-pass>"]) + "\n"
    return text


# -- the tunnel coming up: what openvpn's --up hook reports ----------------------

class Up(namedtuple("Up", "ifname addresses mtu dns remote")):
    """addresses: interfaces for the jail's side; dns: pushed IPv4 servers; remote: "ip:port"."""

    __slots__ = ()

    @property
    def ipv6(self) -> bool:
        return any(address.version == 6 for address in self.addresses)

    def routes(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """Everything into the tunnel: in the jail there is nowhere else to go."""
        return [ipaddress.ip_network("0.0.0.0/0")] + ([ipaddress.ip_network("::/0")] if self.ipv6 else [])


def parse_up(env: object) -> Up:
    """The `--up` hook's environment (dev, ifconfig_*, tun_mtu, foreign_option_N, trusted_*) checked."""
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise ValidationError("openvpn's report is not a set of names and values")
    try:
        local = ipaddress.IPv4Address(env.get("ifconfig_local", ""))
        netmask = env.get("ifconfig_netmask")
        prefix = ipaddress.IPv4Network(f"0.0.0.0/{netmask}").prefixlen if netmask else 32
        addresses: list[ipaddress.IPv4Interface | ipaddress.IPv6Interface] = [
            ipaddress.IPv4Interface(f"{local}/{prefix}")]
        if env.get("ifconfig_ipv6_local"):
            addresses.append(ipaddress.IPv6Interface(
                f"{env['ifconfig_ipv6_local']}/{int(env.get('ifconfig_ipv6_netbits', '128'))}"))
        mtu = int(env.get("tun_mtu", "1500"))
    except ValueError as exc:
        raise ValidationError(f"openvpn reported an unusable tunnel address: {exc}") from None
    if not MIN_MTU <= mtu <= MAX_MTU or any(a.ip.is_loopback or a.ip.is_multicast or a.ip.is_unspecified
                                            for a in addresses):
        raise ValidationError("openvpn reported an unusable tunnel address or MTU")
    dns: list[str] = []
    for key in sorted((k for k in env if k.startswith("foreign_option_")), key=lambda k: int(k[15:] or 0)
                      if k[15:].isdigit() else 0):
        words = env[key].split()
        if words[:2] == ["dhcp-option", "DNS"] and len(words) == 3:
            try:
                server = ipaddress.IPv4Address(words[2])
            except ValueError:
                continue
            if not (server.is_loopback or server.is_unspecified or server.is_multicast):
                dns.append(str(server))
    remote = f"{env.get('trusted_ip', '')}:{env.get('trusted_port', '')}".strip(":")
    return Up(env.get("dev", ""), tuple(addresses), mtu, tuple(dict.fromkeys(dns))[:MAX_DNS_SERVERS], remote)
