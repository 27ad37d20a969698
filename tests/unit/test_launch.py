"""The launcher's pure helpers: no root, no namespaces."""

import os
import resource
from pathlib import Path

import pytest

from appjail.helper.kernel import launch
def test_hidden_dirs_keeps_existing_directories_resolved_and_once(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "nscd").mkdir(parents=True)
    (run / "resolve").mkdir()
    (run / "not-a-dir").write_text("")
    (tmp_path / "var-run").symlink_to(run)
    candidates = [str(run / "resolve"), str(run / "nscd"), str(tmp_path / "var-run" / "nscd"),
                  str(run / "missing"), str(run / "not-a-dir")]

    assert launch.hidden_dirs(candidates) == [os.fsencode(run / "resolve"),
                                              os.fsencode(run / "nscd")]


def test_hidden_dirs_cover_lookup_daemons_but_not_the_system_bus() -> None:
    assert "/run/systemd/resolve" in launch.HIDDEN_DIRS
    assert "/run/nscd" in launch.HIDDEN_DIRS
    assert not any("dbus" in directory for directory in launch.HIDDEN_DIRS)


def test_resolver_files_cover_the_etc_paths_themselves() -> None:
    assert launch.resolver_mounts("/etc/netns/aj-web") == [
        ("/etc/netns/aj-web/resolv.conf", b"/etc/resolv.conf"),
        ("/etc/netns/aj-web/nsswitch.conf", b"/etc/nsswitch.conf"),
    ]


@pytest.mark.parametrize(("program", "env", "expected"), [
    (b"ls", {b"PATH": b"/usr/local/bin:/usr/bin"}, [b"/usr/local/bin/ls", b"/usr/bin/ls"]),
    (b"ls", {b"PATH": b"/bin::"}, [b"/bin/ls", b"ls", b"ls"]),
    (b"ls", {}, [os.path.join(os.fsencode(d), b"ls") for d in os.defpath.split(":")]),
    (b"./run.sh", {b"PATH": b"/bin"}, [b"./run.sh"]),
    (b"/usr/bin/env", {b"PATH": b"/bin"}, [b"/usr/bin/env"]),
])
def test_exec_candidates_follow_execvpe(program: bytes, env: dict, expected: list) -> None:
    assert launch.exec_candidates(program, env) == expected


def test_open_regular_file_accepts_a_file(tmp_path: Path) -> None:
    path = tmp_path / "resolv.conf"
    path.write_text("nameserver 192.0.2.53\n")
    fd = launch.open_regular_file(str(path))
    try:
        assert os.path.samestat(os.fstat(fd), path.stat())
    finally:
        os.close(fd)


@pytest.mark.parametrize("kind", ["symlink", "directory", "missing"])
def test_open_regular_file_refuses_anything_else(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "target"
    target.write_text("")
    path = tmp_path / "resolv.conf"
    if kind == "symlink":
        path.symlink_to(target)
    elif kind == "directory":
        path.mkdir()
    with pytest.raises(OSError):
        launch.open_regular_file(str(path))


def _remap_in_child(sources: list[str], order: list[int]) -> dict[int, str]:
    """In a forked child, open sources[i] as descriptor i, remap them in `order`
    (so each move may overwrite another source), and report the child's
    descriptors: {descriptor: what it points to}, the report pipe excluded.
    """
    report_read, report_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            keep = os.dup2(report_write, 100)
            for fd, source in enumerate(sources):
                os.dup2(os.open(source, os.O_RDONLY), fd)
            launch.remap_fds(order, keep)
            names = [int(name) for name in os.listdir("/proc/self/fd")]
            # listdir()'s own descriptor is closed by now: lexists() skips it.
            lines = [f"{fd} {os.readlink(f'/proc/self/fd/{fd}')}" for fd in sorted(names)
                     if fd != keep and os.path.lexists(f"/proc/self/fd/{fd}")]
            os.write(keep, "\n".join(lines).encode())
        except BaseException as error:
            os.write(keep, f"error {error!r}".encode())
        finally:
            os._exit(0)
    os.close(report_write)
    with open(report_read, "rb") as report:
        text = report.read().decode()
    os.waitpid(pid, 0)
    assert not text.startswith("error"), text
    return {int(fd): target for fd, target in (line.split(" ", 1) for line in text.splitlines())}


@pytest.mark.parametrize("order", [[0, 1, 2], [2, 1, 0], [1, 2, 0], [0, 0, 1], [2]])
def test_remap_fds_places_each_source_and_closes_the_rest(
        tmp_path: Path, order: list[int]) -> None:
    sources = []
    for name in "abc":
        (tmp_path / name).write_text(name)
        sources.append(str(tmp_path / name))

    assert _remap_in_child(sources, order) == {
        target: sources[source] for target, source in enumerate(order)}


def test_limits_are_read_as_the_kernel_lists_them():
    with open("/proc/self/limits") as limits:
        parsed = launch.parse_limits(limits.read())
    assert len(parsed) == 16 and [limit for limit, _, _ in parsed] == list(range(16))
    assert parsed[resource.RLIMIT_NOFILE][1:] == resource.getrlimit(resource.RLIMIT_NOFILE)
    assert parsed[resource.RLIMIT_CPU][1:] == resource.getrlimit(resource.RLIMIT_CPU)


def _fake_process(proc, pid: int, real_uid: int) -> None:
    directory = proc / str(pid)
    directory.mkdir(parents=True)
    (directory / "status").write_text(f"Umask:\t0077\nUid:\t{real_uid}\t{real_uid}\t{real_uid}\t{real_uid}\n")
    (directory / "limits").write_text(open("/proc/self/limits").read())
    (directory / "loginuid").write_text("1000")


def test_the_callers_context_is_read_only_from_a_process_of_its_uid(tmp_path):
    _fake_process(tmp_path, 10, 1000)
    context = launch.read_process_context(10, 1000, proc=str(tmp_path))
    assert context is not None and context.umask == 0o077 and context.loginuid == 1000
    _fake_process(tmp_path, 11, 1001)
    with pytest.raises(OSError, match="does not run as uid 1000"):
        launch.read_process_context(11, 1000, proc=str(tmp_path))


def test_root_connecting_as_a_user_lends_no_context(tmp_path):
    """seteuid around connect: the bus saw the user, the process is root's (and could do anything)."""
    _fake_process(tmp_path, 12, 0)
    assert launch.read_process_context(12, 1000, proc=str(tmp_path)) is None
