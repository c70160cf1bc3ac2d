"""sandbox.files over the sandbox API (port 49983, Connect RPC): list, exists, get_info, make_dir,
rename, remove and watch_dir (sync: polling watchers; async: the WatchDir stream).

The agent runs on this machine, so the tests prepare and check files directly in their own
tmp_path; the SDK talks to the agent's interpreter URL and the agent dispatches its envd calls by
the E2b-Sandbox-Port header.
"""

import asyncio
import os
import time

import pytest
from e2b import (
    AsyncSandbox,
    AuthenticationException,
    FileNotFoundException,
    FilesystemEventType,
    FileType,
    InvalidArgumentException,
    NotFoundException,
)


def test_list_exists_and_get_info(sandbox, tmp_path):
    (tmp_path / "b.txt").write_text("hello")
    (tmp_path / "a_dir").mkdir()
    (tmp_path / "a_dir" / "nested.txt").write_text("x")
    os.symlink("b.txt", tmp_path / "link")

    entries = sandbox.files.list(str(tmp_path))
    assert [(e.name, e.type) for e in entries] == [
        ("a_dir", FileType.DIR),
        ("b.txt", FileType.FILE),
        # envd types a symlink by its target, and tells it apart by symlink_target.
        ("link", FileType.FILE),
    ]
    deep = sandbox.files.list(str(tmp_path), depth=2)
    assert [e.path for e in deep] == [
        str(tmp_path / "a_dir"),
        str(tmp_path / "a_dir" / "nested.txt"),
        str(tmp_path / "b.txt"),
        str(tmp_path / "link"),
    ]

    info = sandbox.files.get_info(str(tmp_path / "b.txt"))
    assert info.name == "b.txt"
    assert info.type == FileType.FILE
    assert info.path == str(tmp_path / "b.txt")
    assert info.size == 5
    assert info.mode == 0o644
    assert info.permissions == "-rw-r--r--"
    assert info.owner and info.group
    assert abs(info.modified_time.timestamp() - os.stat(tmp_path / "b.txt").st_mtime) < 1
    assert info.symlink_target is None

    link = sandbox.files.get_info(str(tmp_path / "link"))
    assert link.type == FileType.FILE
    assert link.mode == 0o644, "the target's mode"
    assert link.permissions.startswith("L"), "the link's own permissions"
    assert link.symlink_target == str(tmp_path / "b.txt")

    d = sandbox.files.get_info(str(tmp_path / "a_dir"))
    assert d.type == FileType.DIR and d.permissions.startswith("d")

    assert sandbox.files.exists(str(tmp_path / "b.txt"))
    assert not sandbox.files.exists(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundException):
        sandbox.files.get_info(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundException):
        sandbox.files.list(str(tmp_path / "missing"))
    with pytest.raises(InvalidArgumentException):
        sandbox.files.list(str(tmp_path / "b.txt"))


def test_metadata_comes_from_user_e2b_xattrs(sandbox, tmp_path):
    f = tmp_path / "meta.txt"
    f.write_text("m")
    try:
        os.setxattr(f, "user.e2b.owner", b"bob")
        os.setxattr(f, "user.other", b"hidden")
    except OSError as e:
        pytest.skip(f"no user xattrs on this filesystem: {e}")
    assert sandbox.files.get_info(str(f)).metadata == {"owner": "bob"}


def test_make_dir_rename_and_remove(sandbox, tmp_path):
    target = tmp_path / "x" / "y" / "z"
    assert sandbox.files.make_dir(str(target)) is True
    assert target.is_dir()
    assert sandbox.files.make_dir(str(target)) is False  # already exists
    (tmp_path / "file").write_text("f")
    with pytest.raises(InvalidArgumentException):
        sandbox.files.make_dir(str(tmp_path / "file"))

    moved = sandbox.files.rename(str(tmp_path / "file"), str(tmp_path / "new" / "place"))
    assert moved.name == "place" and moved.path == str(tmp_path / "new" / "place")
    assert (tmp_path / "new" / "place").read_text() == "f"
    with pytest.raises(FileNotFoundException):
        sandbox.files.rename(str(tmp_path / "file"), str(tmp_path / "other"))

    sandbox.files.remove(str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()
    sandbox.files.remove(str(tmp_path / "x"))  # remove-all: a missing path is fine


def test_users(sandbox, tmp_path):
    (tmp_path / "r.txt").write_text("r")
    assert [e.name for e in sandbox.files.list(str(tmp_path), user="root")] == ["r.txt"]
    with pytest.raises(AuthenticationException):
        sandbox.files.list(str(tmp_path), user="kernelbox-no-such-user")


def _wait_for(handle, predicate, seconds=10):
    """Polls a sync watch handle until `predicate(events)` holds; returns all events seen."""
    seen = []
    deadline = time.time() + seconds
    while time.time() < deadline:
        seen += handle.get_new_events()
        if predicate(seen):
            return seen
        time.sleep(0.05)
    raise AssertionError(f"events never matched: {seen}")


def test_sync_watch_polls_events(sandbox, tmp_path):
    (tmp_path / "sub").mkdir()
    handle = sandbox.files.watch_dir(str(tmp_path), recursive=True)
    try:
        (tmp_path / "new.txt").write_text("one")
        events = _wait_for(
            handle,
            lambda ev: any(e.type == FilesystemEventType.WRITE and e.name == "new.txt" for e in ev),
        )
        assert events[0].type == FilesystemEventType.CREATE and events[0].name == "new.txt"

        (tmp_path / "sub" / "deep.txt").write_text("two")
        _wait_for(
            handle,
            lambda ev: any(e.name == "sub/deep.txt" and e.type == FilesystemEventType.CREATE for e in ev),
        )
        os.rename(tmp_path / "new.txt", tmp_path / "renamed.txt")
        os.remove(tmp_path / "renamed.txt")
        events = _wait_for(
            handle,
            lambda ev: any(e.type == FilesystemEventType.REMOVE and e.name == "renamed.txt" for e in ev),
        )
        kinds = [(e.type, e.name) for e in events]
        assert (FilesystemEventType.RENAME, "new.txt") in kinds
        assert (FilesystemEventType.CREATE, "renamed.txt") in kinds
    finally:
        handle.stop()
    with pytest.raises(Exception):
        handle.get_new_events()


def test_sync_watch_sees_a_change_at_once(sandbox, tmp_path):
    """As E2B's own tests do: change, then poll once; the change is in the answer."""
    handle = sandbox.files.watch_dir(str(tmp_path))
    try:
        for i in range(5):
            (tmp_path / f"f{i}.txt").write_text("x")
            events = handle.get_new_events()
            assert [(e.type, e.name) for e in events] == [
                (FilesystemEventType.CREATE, f"f{i}.txt"),
                (FilesystemEventType.WRITE, f"f{i}.txt"),
            ]
    finally:
        handle.stop()


def test_sync_watch_errors(sandbox, tmp_path):
    (tmp_path / "f").write_text("f")
    with pytest.raises(FileNotFoundException):
        sandbox.files.watch_dir(str(tmp_path / "missing"))
    with pytest.raises(InvalidArgumentException):
        sandbox.files.watch_dir(str(tmp_path / "f"))


def test_async_files_and_streaming_watch(url, tmp_path):
    async def main():
        sbx = await AsyncSandbox.create(debug=True, sandbox_url=url)
        (tmp_path / "sub").mkdir()
        assert [e.name for e in await sbx.files.list(str(tmp_path))] == ["sub"]
        assert await sbx.files.exists(str(tmp_path / "sub"))
        assert await sbx.files.make_dir(str(tmp_path / "made"))

        events = []
        got_write = asyncio.Event()

        def on_event(e):
            events.append(e)
            if e.type == FilesystemEventType.WRITE and e.name == "sub/w.txt":
                got_write.set()

        handle = await sbx.files.watch_dir(
            str(tmp_path), on_event, recursive=True, include_entry=True
        )
        (tmp_path / "sub" / "w.txt").write_text("w")
        await asyncio.wait_for(got_write.wait(), 10)
        await handle.stop()
        write = next(e for e in events if e.type == FilesystemEventType.WRITE)
        assert write.entry is not None and write.entry.path == str(tmp_path / "sub" / "w.txt")
        assert write.entry.type == FileType.FILE

        with pytest.raises(NotFoundException):
            await sbx.files.watch_dir(str(tmp_path / "missing"), on_event)
        await sbx.kill()

    asyncio.run(main())
