"""A sandboxed program in a jail (docs/guide.md "Sandboxed apps"): bubblewrap without --unshare-net, as
`flatpak run` starts an app, keeps the network namespace it was started in, so the jail's way out and
its kill switch hold for what runs inside the sandbox (Flathub is not reachable here; bwrap is what
flatpak runs)."""

from __future__ import annotations

import shutil

import pytest

from .helperlab import DNS, MEMBER, appjail

BWRAP = shutil.which("bwrap") or "/usr/bin/bwrap"


@pytest.mark.skipif(not shutil.which("bwrap"), reason="needs bubblewrap (Debian package bubblewrap)")
def test_a_bubblewrapped_program_keeps_the_jails_network_and_its_kill_switch(helper, lab):
    def sandboxed_curl(path: str) -> list[str]:
        return [BWRAP, "--dev-bind", "/", "/", "--", "curl", "-sS", "--max-time", "3",
                f"http://{lab.SERVER_ADDR}/{path}"]

    plain = appjail(helper, MEMBER, "run", "--", BWRAP, "--dev-bind", "/", "/", "--", "true")
    assert plain.returncode == 0, f"bwrap does not run for a user here: {plain.stderr}"
    through = appjail(helper, MEMBER, "run", "--keep", "--name", "sbx", "--vpn", lab.wg_ifname, "--dns", DNS,
                      "--", *sandboxed_curl("bwrap-probe"))
    assert through.returncode == 0, through.stderr
    visits = [entry["client"] for entry in lab.http_log() if entry["path"] == "/bwrap-probe"]
    assert visits == [lab.WG_CLIENT_TUNNEL_ADDR], "from the jail's VPN address, not the host's uplink"
    lab.wg_down()
    try:
        blocked = appjail(helper, MEMBER, "run", "--name", "sbx", "--", *sandboxed_curl("bwrap-escape"))
        assert blocked.returncode != 0
        assert "/bwrap-escape" not in str(lab.http_log()), "the kill switch holds inside the sandbox"
    finally:
        lab.wg_up()
    assert appjail(helper, MEMBER, "stop", "sbx").returncode == 0
