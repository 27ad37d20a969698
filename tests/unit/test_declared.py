"""Declared jails' files: read and checked as `run` and profiles check options, each bad one on its own,
and compared with the jails made from them (helper/engine/declared.py)."""

from __future__ import annotations

import os

import pytest

from appjail.helper.engine import declared
from appjail.helper.engine.declared import Declared, plan, read_declared

from .test_wgconf import GOOD as WG_TEXT, KEY


@pytest.fixture
def jails_d(tmp_path):
    directory = tmp_path / "jails.d"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    return directory


def write(path, text: str, mode: int = 0o644):
    path.write_text(text)
    path.chmod(mode)
    return path


def test_a_file_declares_roots_kept_jail_named_after_it(jails_d):
    write(jails_d / "seedbox.toml", 'dns = ["192.0.2.53"]\npublish = ["8080:8080"]\nno_lan = true\n')
    reading = read_declared(jails_d)
    assert reading.errors == {}
    jail = reading.jails["seedbox"]
    assert jail.source == str(jails_d / "seedbox.toml")
    spec = jail.spec()
    assert (spec.name, spec.keep, spec.no_lan, spec.dns) == ("seedbox", True, True, ("192.0.2.53",))
    assert [str(p) for p in spec.publish] == ["8080:8080/tcp"]


def test_a_tunnel_file_must_be_readable_by_root_alone_and_its_keys_are_never_shown(jails_d, tmp_path):
    conf = write(tmp_path / "wg.conf", WG_TEXT, 0o600)
    write(jails_d / "vpn.toml", f'wireguard = "{conf}"\n')
    jail = read_declared(jails_d).jails["vpn"]
    assert jail.texts == {"wireguard": WG_TEXT} and "wireguard" not in jail.options
    assert KEY not in repr(jail)
    assert set(declared.tunnels(jail)) == {"wireguard"}
    conf.chmod(0o640)
    (error,) = read_declared(jails_d).errors.values()
    assert error == f"{jails_d / 'vpn.toml'}: wireguard: --wireguard {conf}: others may read it (mode 640); " \
                    "chmod go-rw it"


@pytest.mark.parametrize("name,text,problem", [
    ("bad.toml", "vpn = [", "not valid TOML"),
    ("bad.toml", 'color = "red"\n', "color: unknown key (known: vpn, dns"),
    ("bad.toml", 'name = "other"\n', "name: unknown key"),  # the file's name is the jail's
    ("bad.toml", "dns = \"192.0.2.53\"\n", 'dns: expected a list such as ["10.64.0.1"]'),
    ("bad.toml", 'vpn = "wg0"\npublish = ["80:80"]\n', "--publish cannot be combined with --vpn"),
    ("Bad_Name.toml", "", "the file's name is the jail's: invalid jail name"),
    ("bad.toml", 'wireguard = "/nonexistent/wg.conf"\n', "wireguard: --wireguard /nonexistent/wg.conf: No such file"),
])
def test_each_bad_file_is_one_sentence_naming_it_and_the_others_are_read(jails_d, name, text, problem):
    write(jails_d / "good.toml", "")
    write(jails_d / name, text)
    reading = read_declared(jails_d)
    assert list(reading.jails) == ["good"]
    (path, error), = reading.errors.items()
    assert path == str(jails_d / name) and error.startswith(f"{path}: ") and problem in error, error
    assert "\n" not in error


def test_a_file_others_may_write_is_refused(jails_d):
    write(jails_d / "open.toml", "", 0o664)
    assert "others may write it (mode 664)" in read_declared(jails_d).errors[str(jails_d / "open.toml")]


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away needs root")
def test_a_file_or_a_directory_of_another_user_is_refused(jails_d):
    os.chown(write(jails_d / "theirs.toml", ""), 65534, 65534)
    assert "not your file (owner uid 65534)" in read_declared(jails_d).errors[str(jails_d / "theirs.toml")]
    os.chown(jails_d, 65534, 65534)
    assert read_declared(jails_d).errors == {
        str(jails_d): f"{jails_d}: owned by uid 65534, mode 755: declared jails are read only from a directory "
                      "root alone may change"}


def test_a_directory_others_may_write_declares_nothing(jails_d):
    write(jails_d / "web.toml", "")
    jails_d.chmod(0o777)
    reading = read_declared(jails_d)
    assert reading.jails == {} and "mode 777" in reading.errors[str(jails_d)]


def test_no_directory_declares_nothing(tmp_path):
    assert read_declared(tmp_path / "none") == declared.Reading({}, {})


def test_the_digest_follows_the_file_and_the_files_it_names(jails_d, tmp_path):
    conf = write(tmp_path / "wg.conf", WG_TEXT, 0o600)
    write(jails_d / "vpn.toml", f'wireguard = "{conf}"\n')
    first = read_declared(jails_d).jails["vpn"].digest
    assert read_declared(jails_d).jails["vpn"].digest == first
    write(conf, WG_TEXT.replace("MTU = 1380", "MTU = 1280"), 0o600)
    second = read_declared(jails_d).jails["vpn"].digest
    write(jails_d / "vpn.toml", f'wireguard = "{conf}"\ndns = ["192.0.2.53"]\n')
    assert len({first, second, read_declared(jails_d).jails["vpn"].digest}) == 3


def jail(name: str, digest: str) -> Declared:
    return Declared(name, f"/etc/appjail/jails.d/{name}.toml", {"name": name, "keep": True}, {}, digest)


def test_the_plan_makes_new_and_missing_jails_again_changed_and_broken_ones_and_removes_gone_ones():
    files = {"new": jail("new", "n"), "same": jail("same", "s"), "changed": jail("changed", "c2"),
             "lost": jail("lost", "l"), "broken": jail("broken", "b")}
    made = {"same": "s", "changed": "c1", "lost": "l", "broken": "b", "gone": "g", "gone-too": "x"}
    present = {"same", "changed", "broken", "gone", "roots-own"}  # lost: stopped by hand; gone-too: already
    assert plan(files, made, present, broken={"broken"}) == declared.Plan(
        create=("lost", "new"), recreate=("broken", "changed"), remove=("gone",))


def test_the_plan_leaves_roots_jails_that_no_file_made_alone():
    assert plan({}, {}, {"by-hand"}, set()) == declared.Plan()
