"""--wireguard FILE: the CLI reads it as the user, only if it is theirs and nobody else may write it, and checks it."""

from __future__ import annotations

import os

import pytest

from appjail import cli, tunnelfiles
from appjail.model import ValidationError

TEXT = f"""[Interface]
PrivateKey = {"A" * 43}=
Address = 10.66.0.2/32
[Peer]
PublicKey = {"B" * 43}=
Endpoint = 198.51.100.1:51820
AllowedIPs = 0.0.0.0/0
"""


def own_file(tmp_path, mode: int = 0o600):
    path = tmp_path / "wg.conf"
    path.write_text(TEXT)
    path.chmod(mode)
    return path


def test_the_files_text_is_sent_not_its_path(tmp_path):
    path = own_file(tmp_path)
    options, command = cli.run_request(cli.quick_run_args(["run", "--wireguard", str(path), "--", "curl"]))
    assert options == {"name": "curl", "wireguard": TEXT} and command == ["curl"]


@pytest.mark.parametrize("mode", [0o620, 0o602, 0o666])
def test_a_file_others_may_write_is_refused(tmp_path, mode):
    path = own_file(tmp_path, mode)
    with pytest.raises(ValidationError, match=rf"^--wireguard {path}: others may write it \(mode {mode:o}\)"):
        tunnelfiles.read_own_file(str(path), "--wireguard")


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away needs root")
def test_a_file_of_another_user_is_refused(tmp_path):
    path = own_file(tmp_path)
    os.chown(path, 65534, 65534)
    with pytest.raises(ValidationError, match=rf"^--wireguard {path}: not your file \(owner uid 65534\)$"):
        tunnelfiles.read_own_file(str(path), "--wireguard")


def test_a_missing_file_or_a_directory_is_one_sentence(tmp_path):
    with pytest.raises(ValidationError, match="No such file or directory$"):
        tunnelfiles.read_own_file(str(tmp_path / "nope"), "--wireguard")
    with pytest.raises(ValidationError, match="not a regular file$"):
        tunnelfiles.read_own_file(str(tmp_path), "--wireguard")


def test_a_bad_file_exits_125_before_any_bus_call(tmp_path, capsys):
    path = own_file(tmp_path, 0o666)
    assert cli.main(["run", "--wireguard", str(path), "true"]) == cli.EXIT_APPJAIL
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "others may write it" in err


def test_a_wireguard_file_is_checked_before_any_bus_call(tmp_path, capsys):
    path = own_file(tmp_path)
    path.write_text(TEXT.replace("PrivateKey = " + "A" * 43 + "=", "PrivateKey = x"))
    assert cli.main(["run", "--wireguard", str(path), "true"]) == cli.EXIT_APPJAIL
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "WireGuard file, line 2: " in err
