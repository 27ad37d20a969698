"""Stop signals a jail's processes through pidfds, never a pid that changed hands."""

from __future__ import annotations

import signal
import subprocess

from appjail.helper.kernel import netns
def test_a_pid_whose_process_is_no_longer_in_the_namespace_is_not_hit():
    # the /proc walk saw this pid in a jail; now it is a process elsewhere
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        jail = (0, 0)  # no process of this test lives in that namespace
        assert netns.signal_members([bystander.pid], jail, signal.SIGTERM) == 0
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_a_process_still_in_the_namespace_is_signalled_through_its_pidfd():
    member = subprocess.Popen(["sleep", "30"])
    try:
        here = netns.namespace_id(f"/proc/{member.pid}/ns/net")
        assert netns.signal_members([member.pid, 2 ** 22 + 1], here, signal.SIGTERM) == 1
        assert member.wait(timeout=5) == -signal.SIGTERM
    finally:
        member.kill()
        member.wait()
