"""``--reload``: a changed .py file gets a fresh worker running the new code."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from test_supervisor import APP_SOURCE, READY, get, spawn  # noqa: F401 (spawn is a fixture)

from wsgiplus.shell.reload import FileWatcher


def touch(path: Path, text: str) -> None:
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # a coarse clock still sees it


def test_watcher_reports_changed_and_removed_files_only(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "b.py").write_text("y = 1\n")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "c.py").write_text("")
    (tmp_path / "notes.txt").write_text("")
    watcher = FileWatcher([str(tmp_path)])
    assert sorted(watcher.files()) == [str(tmp_path / "a.py"), str(tmp_path / "pkg" / "b.py")]
    assert watcher.changed() is None
    (tmp_path / "new.py").write_text("")  # a new file is recorded, not a change
    (tmp_path / "notes.txt").write_text("changed")
    assert watcher.changed() is None
    touch(tmp_path / "pkg" / "b.py", "y = 2\n")
    assert watcher.changed() == str(tmp_path / "pkg" / "b.py")
    assert watcher.changed() is None
    (tmp_path / "a.py").unlink()
    assert watcher.changed() == str(tmp_path / "a.py")


def test_reload_serves_the_new_code_and_survives_a_syntax_error(spawn, tmp_path: Path) -> None:  # noqa: F811
    app_file = tmp_path / "plusapp.py"
    app_file.write_text(APP_SOURCE)
    proc = spawn(["-m", "wsgiplus", "plusapp:app", "--reload", "--bind", "127.0.0.1:0",
                  "--threads", "2", "--no-access-log", "--graceful-timeout", "5"], tmp_path)
    port = int(proc.wait_for(r"WSGI\+ listening on 127\.0\.0\.1:(\d+)")[0].group(1))
    proc.wait_for(READY)
    assert get(port)[1].startswith("v1 ")

    mark = proc.mark()
    touch(app_file, APP_SOURCE.replace('VERSION = "v1"', 'VERSION = "v2"'))
    proc.wait_for(r"plusapp\.py changed; reloading", start=mark)
    proc.wait_for(r"worker pid \d+ exited", start=mark)  # the old one, after the new one listens
    assert get(port)[1].startswith("v2 ")

    mark = proc.mark()
    touch(app_file, "def app(:\n")  # a syntax error: the worker serves the error, and keeps watching
    proc.wait_for(r"worker pid \d+ exited", start=mark)
    status, body = get(port)
    assert status == 500 and "SyntaxError" in body

    mark = proc.mark()
    touch(app_file, APP_SOURCE.replace('VERSION = "v1"', 'VERSION = "v3"'))
    proc.wait_for(r"worker pid \d+ exited", start=mark)
    assert get(port)[1].startswith("v3 ")
    proc.send(signal.SIGTERM)
    assert proc.wait(30) == 0


def test_matcher_include_and_exclude_patterns(tmp_path: Path) -> None:
    from wsgiplus.shell.reload import Matcher

    m = Matcher([str(tmp_path)], include=["*.html", "conf/*.toml"], exclude=["scratch_*.py", "gen/*"])
    yes = ["app.py", "pkg/mod.py", "templates/page.html", "conf/app.toml"]
    no = ["scratch_a.py", "gen/out.py", "notes.txt", "other/app.toml", "app.pyc", ".git/x.py",
          "__pycache__/m.py", ".venv/lib/x.py", "app.py.swp", "app.py~", ".#app.py"]
    assert [p for p in yes if not m.wanted(str(tmp_path / p))] == []
    assert [p for p in no if m.wanted(str(tmp_path / p))] == []
    assert not m.wanted("/elsewhere/app.py")  # outside the watched directories
    outside = tmp_path.parent / f"{tmp_path.name}-settings.yaml"
    outside.write_text("x: 1\n")
    try:
        assert Matcher([str(tmp_path)], include=[str(outside)]).outside_files() == [str(outside)]
    finally:
        outside.unlink()


@pytest.mark.parametrize("backend", ["watchfiles", "polling"])
def test_reload_include_exclude_through_the_cli(spawn, tmp_path: Path, backend: str) -> None:  # noqa: F811
    pytest.importorskip("watchfiles")
    app_file = tmp_path / "plusapp.py"
    app_file.write_text(APP_SOURCE)
    (tmp_path / "scratch_a.py").write_text("x = 1\n")
    (tmp_path / "templates").mkdir()
    page = tmp_path / "templates" / "page.html"
    page.write_text("<p>v1</p>")
    env = {}
    if backend == "polling":  # as on a machine without watchfiles: its import fails
        blocker = tmp_path / "blocker"
        blocker.mkdir()
        (blocker / "watchfiles.py").write_text("raise ImportError('not installed here')\n")
        env["PYTHONPATH"] = str(blocker)
    proc = spawn(["-m", "wsgiplus", "plusapp:app", "--reload", "--bind", "127.0.0.1:0", "--threads", "2",
                  "--no-access-log", "--reload-include", "*.html", "--reload-exclude", "scratch_*.py"],
                 tmp_path, env)
    port = int(proc.wait_for(r"WSGI\+ listening on 127\.0\.0\.1:(\d+)")[0].group(1))
    proc.wait_for(READY)
    how = "(watchfiles)" if backend == "watchfiles" else "(stat() polling; pip install 'wsgiplus[reload]'"
    banner = proc.wait_for(r"reload: watching \*\.py \*\.html !scratch_\*\.py under .*")[0].group(0)
    assert how in banner, banner
    mark = proc.mark()
    touch(tmp_path / "scratch_a.py", "x = 2\n")  # excluded: a watcher that saw it would report it first
    touch(page, "<p>v2</p>")  # included: a watcher without the pattern would never reload
    reasons = proc.wait_for(r"worker \d+: (.+) changed; reloading", start=mark)
    assert reasons[0].group(1) == str(page), reasons[0].group(0)
    proc.wait_for(r"worker pid \d+ exited", start=mark)
    assert get(port)[0] == 200  # the fresh worker serves
    assert not proc.matches(r"scratch_a\.py changed", start=mark)
    proc.send(signal.SIGTERM)
    assert proc.wait(30) == 0
