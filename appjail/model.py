"""What a jail is, as data, and the validation of every field of it.

Both sides of the privilege line use this module: the CLI to fail early with a
readable message, the helper because it trusts nothing that crosses the bus.
It imports nothing privileged, and nothing slow: the records are named tuples
(dataclasses would pull `inspect` and friends into every CLI start). OPTIONS
is the one table of a jail's options, from which the CLI, the profiles, the
bus and JailSpec take theirs.
"""

from __future__ import annotations

import ipaddress
import os
from collections import namedtuple

# Character sets instead of regular expressions: `re` would add 5 ms to every CLI start.
_LOWER_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
NAME_CHARS = _LOWER_ALNUM | {"-"}  # [a-z0-9][a-z0-9-]{0,11}
NAME_MAX = 12
# Linux IFNAMSIZ is 16 including the NUL; "/", ":" and whitespace are
# refused by the kernel, the rest we refuse because no real VPN uses them and
# they only make log lines and rule dumps ambiguous.
_ALNUM = _LOWER_ALNUM | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
IFNAME_CHARS = _ALNUM | {"_", ".", "-"}  # [A-Za-z0-9][A-Za-z0-9_.-]{0,14}
IFNAME_MAX = 15
# Names that pass the character rules but are no single way out: the kernel's
# per-interface settings call every interface "all" and the template for new
# ones "default" (as a VPN, forwarding would be switched on for all of them).
NOT_ONE_INTERFACE = {"all": "every interface", "default": "the template for new interfaces",
                     "lo": "the loopback interface"}
MAX_DNS_SERVERS = 3  # glibc reads at most three nameserver lines


class ValidationError(ValueError):
    """A field of a request is not acceptable; the message says which and why."""


def validate_name(name: object) -> str:
    """A jail name: `[a-z0-9][a-z0-9-]{0,11}`, so `aj-NAME` fits an interface name."""
    if not (isinstance(name, str) and _made_of(name, _LOWER_ALNUM, NAME_CHARS, NAME_MAX)):
        raise ValidationError(
            f"invalid jail name {_show(name)}: use 1-12 characters from a-z, 0-9 "
            "and '-', starting with a letter or digit"
        )
    return name


KERNEL_PREFIX = "aj-"  # a jail's kernel name: its namespace, links, chains (docs/design.md, part 2)


def validate_kernel_name(kernel_name: str) -> str:
    """aj- and a jail name's characters: 15 at most, an interface name."""
    if not (isinstance(kernel_name, str) and kernel_name.startswith(KERNEL_PREFIX)):
        raise ValidationError(f"invalid kernel name {kernel_name!r}")
    validate_name(kernel_name[len(KERNEL_PREFIX):])
    return kernel_name


def default_jail_name(program: str) -> str:
    """`/usr/bin/Firefox-ESR` -> `firefox-esr`: a valid jail name from a program."""
    base = os.path.basename(program).lower()
    dashed = "".join(c if c in NAME_CHARS else " " for c in base)
    name = "-".join(dashed.split()).strip("-")[:NAME_MAX].strip("-")
    return name or "jail"


def is_address(host: str) -> bool:
    """An IPv4 or IPv6 address literal."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_hostname(host: str) -> bool:
    """A DNS name as a tunnel file may give a server: ASCII labels of letters, digits and inner dashes."""
    labels = host.rstrip(".").split(".")
    return len(host) <= 253 and all(
        0 < len(label) <= 63 and label.isascii() and label[0] != "-" and label[-1] != "-"
        and all(c.isalnum() or c == "-" for c in label) for label in labels)


# the owner part of USER/NAME: a user name as useradd(8) takes it, or a uid
_USER_FIRST = frozenset("abcdefghijklmnopqrstuvwxyz_")
_USER_CHARS = _LOWER_ALNUM | {"_", "-"}
USER_MAX = 32
UID_MAX = 0xFFFFFFFE  # (uid_t)-1 is no one


def parse_jail_address(address: object) -> tuple[str | int | None, str]:
    """(owner, name) of `NAME` (the caller's own jail), `USER/NAME` or `UID/NAME` (a given owner's).

    The owner is None, a user name, or a uid; whether the caller may act on
    another owner's jail is the helper's question (org.appjail.manage).
    """
    if not isinstance(address, str):
        raise ValidationError(f"invalid jail {_show(address)}: expected NAME, USER/NAME or UID/NAME")
    owner, slash, name = address.rpartition("/")
    validate_name(name)
    if not slash:
        return None, name
    if owner.isdigit() and owner.isascii() and len(owner) <= 10 and int(owner) <= UID_MAX:
        return int(owner), name
    if not _made_of(owner, _USER_FIRST, _USER_CHARS, USER_MAX):
        raise ValidationError(f"invalid owner {_show(owner)} in jail {_show(address)}: "
                              "use a user name or a uid before the '/'")
    return owner, name


def _made_of(text: str, first: frozenset, rest: frozenset, longest: int) -> bool:
    return 0 < len(text) <= longest and text[0] in first and all(c in rest for c in text[1:])


def validate_ifname(ifname: object) -> str:
    """A network interface name such as `wg0` (never a path, never shell text)."""
    if (
        not isinstance(ifname, str)
        or not _made_of(ifname, _ALNUM, IFNAME_CHARS, IFNAME_MAX)
        or ifname in (".", "..")
    ):
        raise ValidationError(
            f"invalid interface name {_show(ifname)}: use 1-15 characters from "
            "A-Z, a-z, 0-9, '_', '.' and '-'"
        )
    if ifname.startswith("aj-"):
        raise ValidationError(
            f"interface {ifname!r} belongs to another jail and cannot be a VPN"
        )
    if ifname in NOT_ONE_INTERFACE:
        raise ValidationError(
            f"{ifname!r} is {NOT_ONE_INTERFACE[ifname]}, not a VPN interface"
        )
    return ifname


def validate_ipv4(address: object, what: str = "address") -> str:
    """A unicast IPv4 address in dotted-quad form, returned normalised."""
    try:
        if not isinstance(address, str) or not address.isascii():
            raise ValueError
        parsed = ipaddress.IPv4Address(address)
    except ValueError:
        raise ValidationError(f"invalid {what} {_show(address)}: not an IPv4 address") from None
    if parsed.is_multicast or parsed.is_unspecified or parsed == ipaddress.IPv4Address("255.255.255.255"):
        raise ValidationError(f"invalid {what} {address}: not a unicast address")
    return str(parsed)


def validate_dns(servers: object) -> tuple[str, ...]:
    """Nameservers for a jail: up to three IPv4 unicast addresses, no loopback.

    A loopback resolver would be the jail's own loopback, where nothing listens.
    """
    if not isinstance(servers, (list, tuple)):
        raise ValidationError("invalid DNS servers: expected a list of addresses")
    if len(servers) > MAX_DNS_SERVERS:
        raise ValidationError(f"too many DNS servers: at most {MAX_DNS_SERVERS}")
    result = []
    for server in servers:
        address = validate_ipv4(server, "DNS server")
        if ipaddress.IPv4Address(address).is_loopback:
            raise ValidationError(
                f"invalid DNS server {address}: a loopback address is not reachable from a jail"
            )
        if address not in result:
            result.append(address)
    return tuple(result)


def validate_network(cidr: object, what: str = "network") -> ipaddress.IPv4Network:
    """An IPv4 network in CIDR form; host bits must be zero."""
    try:
        if not isinstance(cidr, str) or not cidr.isascii():
            raise ValueError
        return ipaddress.IPv4Network(cidr, strict=True)
    except ValueError:
        raise ValidationError(f"invalid {what} {_show(cidr)}: expected an IPv4 CIDR such as 10.0.0.0/8") from None


# --no-lan: private (RFC 1918), link-local and carrier-grade NAT ranges
LAN_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10")
PROTOCOLS = ("tcp", "udp")
MAX_RULES = 64  # published ports, denied ranges: each one is a netfilter rule


class Publish(namedtuple("Publish", "host_port jail_port proto host_address", defaults=("tcp", None))):
    """A host port forwarded into the jail: `[HOSTADDR:]HOSTPORT:JAILPORT[/tcp|/udp]`.

    host_address None: every address of the host; one of 127/8 (`on_loopback`):
    the host's own programs alone, never another machine.
    """

    __slots__ = ()

    @property
    def on_loopback(self) -> bool:
        return self.host_address is not None and self.host_address.startswith("127.")

    def __str__(self) -> str:
        address = f"{self.host_address}:" if self.host_address else ""
        return f"{address}{self.host_port}:{self.jail_port}/{self.proto}"

    def overlaps(self, other: Publish) -> bool:
        """Whether both would claim the same packets on the host."""
        if (self.proto, self.host_port) != (other.proto, other.host_port):
            return False
        return None in (self.host_address, other.host_address) or self.host_address == other.host_address


def parse_publish(text: object) -> Publish:
    if not isinstance(text, str) or not text.isascii() or len(text) > 40:
        raise ValidationError(f"invalid --publish {_show(text)}: expected "
                              "[HOSTADDR:]HOSTPORT:JAILPORT[/tcp|/udp]")
    spec, slash, proto = text.partition("/")
    proto = proto if slash else "tcp"
    parts = spec.split(":")
    if proto not in PROTOCOLS or len(parts) not in (2, 3):
        raise ValidationError(f"invalid --publish {_show(text)}: expected "
                              "[HOSTADDR:]HOSTPORT:JAILPORT[/tcp|/udp]")
    host_address = validate_ipv4(parts[0], "--publish host address") if len(parts) == 3 else None
    host_port, jail_port = (_port(p, text) for p in parts[-2:])
    return Publish(host_port, jail_port, proto, host_address)


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValidationError(f"invalid port {_show(text)} in --publish {whole}: use 1-65535")
    return int(text)


def validate_deny(cidrs: object) -> tuple[str, ...]:
    if not isinstance(cidrs, (list, tuple)) or len(cidrs) > MAX_RULES:
        raise ValidationError(f"invalid --deny: expected at most {MAX_RULES} CIDRs")
    return tuple(dict.fromkeys(str(validate_network(c, "--deny range")) for c in cidrs))


def validate_publish(entries: object) -> tuple[Publish, ...]:
    if not isinstance(entries, (list, tuple)) or len(entries) > MAX_RULES:
        raise ValidationError(f"invalid --publish: expected at most {MAX_RULES} ports")
    result: list[Publish] = []
    for entry in entries:
        publish = entry if isinstance(entry, Publish) else parse_publish(entry)
        if any(publish.overlaps(other) for other in result):
            raise ValidationError(f"--publish {publish} is given twice")
        result.append(publish)
    return tuple(result)


FORWARD_METHODS = ("natpmp",)


def validate_forward_port(value: str) -> str:
    """`natpmp`, or `natpmp:GATEWAY` (default gateway: the jail's first nameserver, as VPN providers
    that forward ports by NAT-PMP have it), returned normalised."""
    method, colon, gateway = value.partition(":")
    if method not in FORWARD_METHODS:
        raise ValidationError(f"invalid forward_port {_show(value)}: expected natpmp or natpmp:GATEWAY")
    return method + (":" + validate_ipv4(gateway, "NAT-PMP gateway") if colon else "")


def forward_gateway(value: str, dns: tuple[str, ...]) -> str | None:
    """The gateway a forward_port value asks, given the jail's nameservers (None: none known)."""
    _method, _colon, gateway = value.partition(":")
    return gateway or (dns[0] if dns else None)


# -- the options of a jail: one table ------------------------------------------

FLAG, VALUE, LIST = "flag", "value", "list"  # a switch, one value, a repeatable value
_KIND_TYPES: dict[str, type | tuple[type, ...]] = {FLAG: bool, VALUE: str, LIST: (list, tuple)}


class Option(namedtuple("Option", "key flags kind help metavar example validate default required agree file "
                        "launch", defaults=(None, None, None, None, False, True, False, False))):
    """One option of a jail. Everything else is derived from OPTIONS: `run`'s
    flags (both parsers), the profile keys, the Run call's options, JailSpec,
    the state records, the join check and the `--json` fields.

    key: the name on the bus, in profiles, in JailSpec and in --json.
    flags: on the command line; the last one names it in messages.
    kind: FLAG (bool), VALUE (str) or LIST (repeatable: list of str).
    help, metavar: for `appjail run --help`; example: a value, for messages.
    validate: a value of the kind's type (items unchecked) -> the JailSpec value.
    default: JailSpec's value when not given; required: a Run call must give it.
    agree: a program that joins the jail must not ask for it differently.
    file: the flag and the profile key name a file that the client reads as
    the user and sends as text (the helper never opens a user's path); the
    text may hold keys, so it is no JailSpec field, never recorded nor shown.
    tunnelfiles reads and checks each kind.
    launch: the option shapes the one program it comes with (its mount
    namespace), not the jail: no JailSpec field, no join check, never
    recorded nor shown; programs of one jail may differ in it.
    """

    __slots__ = ()

    @property
    def label(self) -> str:
        return self.flags[-1].lstrip("-")

    def hint(self) -> str:
        """What a value looks like, for a user who wrote something else."""
        if self.kind == FLAG:
            return "true or false"
        return f'a string such as "{self.example}"' if self.kind == VALUE else f'a list such as ["{self.example}"]'

    def accepts(self, value: object) -> bool:
        """Whether `value` has the kind's type (validate checks the rest)."""
        return isinstance(value, _KIND_TYPES[self.kind])

    def check(self, value: object) -> object:
        """A given value (None: not given), validated and normalised for JailSpec."""
        if value is None:
            if self.required:
                raise ValidationError(f"missing option {self.key}")
            return self.default
        if not self.accepts(value):
            raise ValidationError(f"invalid {self.key}: expected {self.hint()}")
        return value if self.validate is None else self.validate(value)

    def wire(self, value: object) -> object:
        """A JailSpec value as the bus, the state records and --json carry it."""
        return [str(item) for item in value] if self.kind == LIST else value

    def shown(self, value: object) -> str:
        """A JailSpec value in a sentence."""
        if self.kind == FLAG:
            return "yes" if value else "no"
        return (",".join(self.wire(value)) if self.kind == LIST else value) or "none"


OPTIONS: tuple[Option, ...] = (
    Option("name", ("--name",), VALUE, "jail name (default: from PROGRAM); joins your jail of that name",
           metavar="NAME", example="web", validate=validate_name, required=True, agree=False),
    Option("vpn", ("--vpn",), VALUE, "the jail may leave only through IFACE",
           metavar="IFACE", example="wg0", validate=validate_ifname),
    Option("dns", ("--dns",), LIST, "nameserver for the jail",
           metavar="ADDR", example="10.64.0.1", validate=validate_dns, default=()),
    Option("keep", ("--keep",), FLAG, "keep the jail after its last program exits", default=False),
    Option("publish", ("--publish",), LIST, "forward a host port into the jail",
           metavar="[HOSTADDR:]HOSTPORT:JAILPORT[/tcp|/udp]", example="6000:8080", validate=validate_publish,
           default=()),
    Option("deny", ("--deny",), LIST, "drop the jail's traffic to CIDR",
           metavar="CIDR", example="192.0.2.0/24", validate=validate_deny, default=()),
    Option("no_lan", ("--no-lan",), FLAG,
           "drop traffic to private, link-local and CGNAT ranges (the VPN path stays open)", default=False),
    Option("wireguard", ("--wireguard",), VALUE,
           "the jail's only way out is its own WireGuard tunnel, from a wg-quick FILE of yours",
           metavar="FILE", example="~/vpn/wg.conf", agree=False, file=True),
    Option("openvpn", ("--openvpn",), VALUE,
           "the jail's only way out is its own OpenVPN tunnel, from a .ovpn FILE of yours (keys inline)",
           metavar="FILE", example="~/vpn/provider.ovpn", agree=False, file=True),
    Option("forward_port", ("--forward-port",), VALUE,
           "ask the VPN's gateway to forward a port to the jail (tunnel jails): natpmp[:GATEWAY]",
           metavar="natpmp[:GATEWAY]", example="natpmp", validate=validate_forward_port),
    Option("no_system_bus", ("--no-system-bus",), FLAG,
           "hide the system bus (/run/dbus) from this program (not from the jail's others)",
           default=False, agree=False, launch=True),
)
TUNNEL_OPTIONS = tuple(option.key for option in OPTIONS if option.file)  # each makes a tunnel jail


def spec_options() -> tuple[Option, ...]:
    """The options that are JailSpec's fields: all but file options (their text may hold keys)
    and launch options (they belong to one program, not to the jail)."""
    return tuple(option for option in OPTIONS if not (option.file or option.launch))


def launch_settings(options: dict) -> dict:
    """Take the launch options out of checked Run options: each one's value, its default if not given."""
    return {option.key: option.check(options.pop(option.key, None)) for option in OPTIONS if option.launch}


class JailSpec(namedtuple("JailSpec", [option.key for option in spec_options()],
                          defaults=(None,) * len(spec_options()))):
    """The network shape of one jail, as requested by its owner; validated when made.

    A field given as None (or left out) takes its option's default.
    """

    __slots__ = ()
    _options = spec_options()  # the table it was made from

    def __new__(cls, *args: object, **kwargs: object) -> JailSpec:
        given = super().__new__(cls, *args, **kwargs)  # binds arguments to fields, as a namedtuple does
        spec = super().__new__(cls, *(option.check(value) for option, value in zip(cls._options, given)))
        if spec.vpn and not all(publish.on_loopback for publish in spec.publish):
            # replies to a published port would follow the jail's only route: the VPN
            # (replies to the host's loopback are the host's: its local routes come first)
            raise ValidationError("--publish cannot be combined with --vpn but on the host's loopback "
                                  "(127.0.0.1:HOSTPORT:JAILPORT): a --vpn jail's only way in and out is the VPN")
        return spec

    def lan_ranges(self) -> tuple[str, ...]:
        return LAN_RANGES if self.no_lan else ()


def parse_run_options(options: object) -> dict:
    """Check the options of a Run call: known keys, right types, valid values.

    Returns them as given (the wire form), for the bus or for JailSpec(**options).
    """
    if not isinstance(options, dict):
        raise ValidationError("invalid options: expected a dictionary")
    known = {option.key for option in OPTIONS}
    for key in options:
        if key not in known:
            raise ValidationError(f"unknown option {_show(key)}")
    for option in OPTIONS:
        option.check(options.get(option.key))
    return dict(options)


def wire_options(spec: JailSpec) -> dict:
    """A jail's options as the bus, the state records and `--json` carry them."""
    return {option.key: option.wire(getattr(spec, option.key)) for option in spec_options()}


def wire_defaults() -> dict:
    """What an option not on the bus (the bus carries no null) means, for `--json`."""
    return {option.key: option.wire(option.default) for option in spec_options()}


def disagreements(options: dict, current: JailSpec) -> list[str]:
    """Where the options of a program joining a jail differ from the jail's: "vpn wg0" (its value)."""
    return [f"{option.label} {option.shown(getattr(current, option.key))}" for option in spec_options()
            if option.agree and option.key in options
            and option.check(options[option.key]) != getattr(current, option.key)]


def _show(value: object) -> str:
    """Quote a rejected value for a message without letting it run away."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


MAX_ARGS = 4096
MAX_ARG_BYTES = 128 * 1024  # the kernel's MAX_ARG_STRLEN
MAX_TOTAL_BYTES = 2 * 1024 * 1024
MAX_PATH_BYTES = 4096


class LaunchSpec(namedtuple("LaunchSpec", "argv env cwd")):
    """What to run in a jail: argv, environment and working directory, as bytes."""

    __slots__ = ()

    def __new__(cls, argv: tuple[bytes, ...], env: tuple[bytes, ...], cwd: bytes) -> LaunchSpec:
        return super().__new__(cls, validate_argv(argv), validate_env(env), validate_cwd(cwd))

    def env_dict(self) -> dict[bytes, bytes]:
        return dict(entry.split(b"=", 1) for entry in self.env)


def validate_argv(argv: object) -> tuple[bytes, ...]:
    if not isinstance(argv, tuple) or not argv:
        raise ValidationError("invalid command: expected a program and its arguments")
    if len(argv) > MAX_ARGS:
        raise ValidationError(f"invalid command: more than {MAX_ARGS} arguments")
    _check_strings(argv, "argument")
    if not argv[0]:
        raise ValidationError("invalid command: the program name is empty")
    return argv


def validate_env(env: object) -> tuple[bytes, ...]:
    if not isinstance(env, tuple) or len(env) > MAX_ARGS:
        raise ValidationError("invalid environment: expected at most "
                              f"{MAX_ARGS} NAME=VALUE entries")
    _check_strings(env, "environment entry")
    for entry in env:
        if b"=" not in entry[1:]:
            raise ValidationError(f"invalid environment entry {_show(entry)}: expected NAME=VALUE")
    return env


def validate_cwd(cwd: object) -> bytes:
    if (not isinstance(cwd, bytes) or not cwd.startswith(b"/") or b"\0" in cwd
            or len(cwd) > MAX_PATH_BYTES):
        raise ValidationError(f"invalid working directory {_show(cwd)}: expected an absolute path")
    return cwd


def _check_strings(values: tuple, what: str) -> None:
    total = 0
    for value in values:
        if not isinstance(value, bytes):
            raise ValidationError(f"invalid {what} {_show(value)}: expected bytes")
        if b"\0" in value:
            raise ValidationError(f"invalid {what} {_show(value)}: contains a NUL byte")
        if len(value) > MAX_ARG_BYTES:
            raise ValidationError(f"invalid {what}: longer than {MAX_ARG_BYTES} bytes")
        total += len(value)
    if total > MAX_TOTAL_BYTES:
        raise ValidationError(f"invalid {what}s: more than {MAX_TOTAL_BYTES} bytes in all")
