import os

from appjail.instances import own_process_names, single_instance_warning


def test_warns_when_the_browser_already_runs_and_no_separate_instance_is_asked_for():
    warning = single_instance_warning("/usr/bin/firefox-esr", ["https://example.org"],
                                      lambda: {"firefox-esr", "bash"})
    assert warning and "--new-instance -P PROFILE" in warning


def test_no_warning_for_a_separate_instance_or_when_nothing_runs():
    assert single_instance_warning("firefox", ["--new-instance", "-P", "vpn"], lambda: {"firefox"}) is None
    assert single_instance_warning("chromium", ["--user-data-dir=/tmp/x"], lambda: {"chromium"}) is None
    assert single_instance_warning("firefox", [], lambda: {"bash"}) is None
    assert single_instance_warning("curl", [], lambda: 1 / 0) is None  # not even asked


def test_own_process_names_include_this_process():
    with open("/proc/self/comm") as comm:
        assert comm.read().strip() in own_process_names(os.getuid())
