"""`appjail service`: the drop-in that puts a systemd service into root's jail (services.py), and the
unit that stands for the jail (jailunit.py)."""

from __future__ import annotations

import configparser
import pytest

from appjail import cli, services
from appjail.model import ValidationError


def read_unit(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string(text)
    return parser


def test_the_drop_in_puts_the_service_into_the_jails_namespace_and_binds_it_to_the_jail():
    unit = read_unit(services.drop_in("seedbox", "aj-seedbox"))
    assert unit["Unit"]["BindsTo"] == unit["Unit"]["After"] == "appjail-jail@aj\\x2dseedbox.service"
    assert unit["Service"]["NetworkNamespacePath"] == "/run/netns/aj-seedbox"
    assert unit["Service"]["BindReadOnlyPaths"].split() == [
        "/etc/netns/aj-seedbox/resolv.conf:/etc/resolv.conf", "/etc/netns/aj-seedbox/nsswitch.conf:/etc/nsswitch.conf"]
    assert "-/run/nscd" in unit["Service"]["InaccessiblePaths"].split()


def test_the_drop_in_is_written_replaced_and_removed_with_its_empty_directory(tmp_path):
    path = services.write_drop_in("web", "aj-web", "httpd", tmp_path)
    assert path == tmp_path / "httpd.service.d" / "appjail.conf"
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    services.write_drop_in("web", "aj-web-1a2b", "httpd.service", tmp_path)
    assert "/run/netns/aj-web-1a2b" in path.read_text()
    assert [p.name for p in path.parent.iterdir()] == ["appjail.conf"]
    assert services.remove_drop_in("httpd", tmp_path) == path and not path.parent.exists()
    assert services.remove_drop_in("httpd", tmp_path) is None


def test_the_administrators_own_drop_ins_stay(tmp_path):
    path = services.write_drop_in("web", "aj-web", "httpd", tmp_path)
    (path.parent / "limits.conf").write_text("[Service]\nMemoryMax=1G\n")
    services.remove_drop_in("httpd", tmp_path)
    assert [p.name for p in path.parent.iterdir()] == ["limits.conf"]


@pytest.mark.parametrize("unit", ["../../etc/passwd", "a/b.service", "x.socket", "getty@.service", "",
                                  "appjail-jail@aj\\x2dweb.service", "-n.service", "a" * 250 + ".service"])
def test_a_unit_name_that_is_no_services_is_refused(unit):
    with pytest.raises(ValidationError, match="invalid unit"):
        services.validate_unit(unit)


def test_service_needs_root(monkeypatch, capsys):
    monkeypatch.setattr(cli.os, "geteuid", lambda: 1000)
    assert cli.main(["service", "web", "httpd"]) == cli.EXIT_APPJAIL
    assert capsys.readouterr().err == "appjail: appjail service writes systemd's configuration: run it as root\n"


def test_service_remove_takes_the_unit_alone(tmp_path, capsys):
    services.write_drop_in("web", "aj-web", "httpd", tmp_path)
    assert cli.main(["service", "--unit-dir", str(tmp_path), "--remove", "web", "httpd"]) == cli.EXIT_APPJAIL
    assert cli.main(["service", "--unit-dir", str(tmp_path), "--remove", "httpd"]) == 0
    assert not (tmp_path / "httpd.service.d").exists()
    assert "removed" in capsys.readouterr().out
