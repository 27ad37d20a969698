"""appjail-jail@KERNEL.service's program: a jail's namespace mounted or not, read from the mount table."""

from __future__ import annotations

from appjail import jailunit

MOUNTINFO = """\
25 1 0:23 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
601 25 0:4 net:[4026532999] /run/netns/aj-web rw shared:300 - nsfs nsfs rw
602 25 0:4 net:[4026533000] /run/netns/aj-web-1a2b rw shared:300 - nsfs nsfs rw
"""


def test_a_jail_is_there_while_its_namespace_is_mounted(tmp_path):
    table = tmp_path / "mountinfo"
    table.write_text(MOUNTINFO)
    assert jailunit.mounted("/run/netns/aj-web", str(table))
    assert not jailunit.mounted("/run/netns/aj-we", str(table))
    assert not jailunit.mounted("/run/netns/aj-db", str(table))


def test_only_a_jails_kernel_name_is_taken(capsys):
    for argv in ([], ["../etc"], ["web"], ["aj-web", "more"]):
        assert jailunit.main(argv) == 2
    assert "usage" in capsys.readouterr().err


def test_no_jail_by_the_deadline_fails(monkeypatch, capsys):
    monkeypatch.setenv("APPJAIL_JAIL_WAIT", "0.05")
    assert jailunit.main(["aj-nosuchjail"]) == 1
    assert "no appjail jail has namespace /run/netns/aj-nosuchjail" in capsys.readouterr().err
