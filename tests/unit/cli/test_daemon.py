"""The daemon options' pieces: node-name abbreviations, the pid file."""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from celeriac.cli._daemon import PidFile, drop_privileges, expand_node, node_name
from celeriac.exceptions import CeleriacError


def test_celery_abbreviations_expand_as_celery_expands_them() -> None:
    host = socket.gethostname()
    assert node_name("w1@%h") == f"w1@{host}"
    assert node_name("w1") == f"w1@{host}"  # a bare name gets the host, as in Celery
    assert node_name(None) == f"celeriac@{host}"
    assert expand_node("%n-%i%I.log", "w2@box.example.com") == "w2-0.log"
    assert (
        expand_node("%h|%d|%p|%%", "w2@box.example.com") == "box.example.com|example.com|w2@box.example.com|%"
    )
    assert (
        expand_node("x@%n.%d", "box.example.com") == "x@box.example.com"
    )  # -n: %n is the host's first label
    with pytest.raises(CeleriacError, match="unknown abbreviation %z"):
        expand_node("%z.log", "w@h")


def test_a_pid_file_of_a_live_process_refuses_and_a_stale_one_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "w.pid"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        path.write_text(f"{sleeper.pid}\n")
        with pytest.raises(CeleriacError, match=f"names process {sleeper.pid}, which is running"):
            PidFile(str(path)).acquire()
        assert path.read_text() == f"{sleeper.pid}\n"  # left alone
    finally:
        sleeper.kill()
        sleeper.wait()
    pidfile = PidFile(str(path))
    pidfile.acquire()  # its process is gone now: stale
    assert path.read_text() == f"{os.getpid()}\n"
    pidfile.release()
    assert not path.exists()


def test_a_pid_file_rewritten_by_another_process_is_not_removed(tmp_path: Path) -> None:
    path = tmp_path / "w.pid"
    pidfile = PidFile(str(path))
    pidfile.acquire()
    path.write_text("1\n")
    pidfile.release()
    assert path.read_text() == "1\n"


def _in_child(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", "from celeriac.cli._daemon import drop_privileges\n" + code],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_root_becomes_the_user_and_group_it_is_given() -> None:
    nobody = pwd.getpwnam("nobody")
    code = "import os\ndrop_privileges('nobody', None)\nprint(os.getuid(), os.getgid(), os.geteuid())"
    if os.geteuid() != 0:  # not root: only becoming oneself can be tried
        nobody = pwd.getpwuid(os.geteuid())
        code = code.replace("'nobody'", repr(nobody.pw_name))
    assert _in_child(code) == f"{nobody.pw_uid} {nobody.pw_gid} {nobody.pw_uid}"


def test_uid_and_gid_are_warned_about_and_ignored_when_not_root() -> None:
    # As root, the child first gives root up, to be a process that is not root.
    become = "import os\nos.setgid(65534)\nos.setuid(65534)\n" if os.geteuid() == 0 else ""
    out = _in_child(
        become + "print(drop_privileges('0', '0'))\nprint(drop_privileges(str(os.geteuid()), None))"
    )
    warning, same = out.splitlines()
    assert "--uid/--gid ignored: only root can change user" in warning
    assert same == "None"  # already that user: nothing to say
    with pytest.raises(CeleriacError, match="no such user"):
        drop_privileges("no-such-user-celeriac", None)
