"""The official Python SDK (e2b 2.63.0) against `kernelbox serve`, outside debug mode.

Started by `cargo test --test serve`, which runs a `kernelbox serve` of its own and passes its URL
and API key as KERNELBOX_SERVE_URL / KERNELBOX_SERVE_KEY. The SDK is configured only the way a
user would: E2B_API_URL and E2B_SANDBOX_URL pointing at serve, E2B_API_KEY.
"""

import datetime
import os
import time
import uuid

URL = os.environ["KERNELBOX_SERVE_URL"].rstrip("/")
KEY = os.environ["KERNELBOX_SERVE_KEY"]
os.environ.update(E2B_API_URL=URL, E2B_SANDBOX_URL=URL, E2B_API_KEY=KEY, E2B_DOMAIN="kernelbox.invalid")
os.environ.pop("E2B_DEBUG", None)

import pytest  # noqa: E402
from e2b import AsyncSandbox, Sandbox, SandboxQuery  # noqa: E402
from e2b import (  # noqa: E402
    AuthenticationException,
    CommandExitException,
    NotFoundException,
    SandboxException,
)


@pytest.fixture
def sandbox():
    sbx = Sandbox.create(timeout=120, metadata={"suite": "serve"}, envs={"SUITE_VAR": "from-create"})
    yield sbx
    sbx.kill()


def test_create_gives_a_running_sandbox_with_metadata_envs_and_a_deadline(sandbox):
    assert len(sandbox.sandbox_id) == 20 and sandbox.sandbox_id.isalnum()
    info = sandbox.get_info()
    assert info.template_id == "base"
    assert info.metadata == {"suite": "serve"}
    assert 100 <= (info.end_at - info.started_at).total_seconds() <= 121
    assert sandbox.is_running()
    out = sandbox.commands.run("echo $SUITE_VAR; echo $E2B_SANDBOX_ID")
    assert out.stdout.split() == ["from-create", sandbox.sandbox_id]


def test_commands_run_as_user_by_default_and_as_root_when_asked(sandbox):
    assert sandbox.commands.run("id -un; pwd").stdout.split() == ["user", "/home/user"]
    assert sandbox.commands.run("id -un", user="root").stdout.strip() == "root"
    with pytest.raises(CommandExitException):
        sandbox.commands.run("exit 3")


def test_files_round_trip_through_the_gateway(sandbox):
    sandbox.files.write("notes/a.txt", "hello from python")
    assert sandbox.files.read("/home/user/notes/a.txt") == "hello from python"
    names = [e.name for e in sandbox.files.list("/home/user/notes")]
    assert names == ["a.txt"]
    owner = sandbox.commands.run("stat -c %U /home/user/notes/a.txt").stdout.strip()
    assert owner == "user"


def test_set_timeout_moves_the_deadline_both_ways_and_connect_only_extends(sandbox):
    sandbox.set_timeout(600)
    far = sandbox.get_info().end_at
    sandbox.set_timeout(60)
    near = sandbox.get_info().end_at
    assert (far - near).total_seconds() > 500
    Sandbox.connect(sandbox.sandbox_id, timeout=10)
    assert Sandbox.get_info(sandbox.sandbox_id).end_at == near
    Sandbox.connect(sandbox.sandbox_id, timeout=900)
    assert Sandbox.get_info(sandbox.sandbox_id).end_at > far


def test_list_pages_and_filters_by_metadata():
    tag = uuid.uuid4().hex
    made = [Sandbox.create(timeout=60, metadata={"tag": tag, "n": str(i)}) for i in range(3)]
    try:
        paginator = Sandbox.list(query=SandboxQuery(metadata={"tag": tag}), limit=2)
        first = paginator.next_items()
        assert len(first) == 2 and paginator.has_next
        second = paginator.next_items()
        assert len(second) == 1 and not paginator.has_next
        seen = {s.sandbox_id for s in first + second}
        assert seen == {s.sandbox_id for s in made}
        only = Sandbox.list(query=SandboxQuery(metadata={"tag": tag, "n": "1"})).next_items()
        assert [s.sandbox_id for s in only] == [made[1].sandbox_id]
    finally:
        for s in made:
            s.kill()


def test_kill_ends_the_sandbox_and_a_gone_sandbox_is_not_found(sandbox):
    sandbox_id = sandbox.sandbox_id
    assert sandbox.kill() is True
    assert not sandbox.is_running()
    assert Sandbox.kill(sandbox_id) is False
    with pytest.raises(NotFoundException):
        Sandbox.get_info(sandbox_id)
    with pytest.raises(NotFoundException):
        Sandbox.connect(sandbox_id)
    with pytest.raises(SandboxException):
        sandbox.commands.run("true")


def test_a_sandbox_expires_on_its_own():
    sbx = Sandbox.create(timeout=2)
    assert sbx.is_running()
    deadline = time.time() + 20
    while sbx.is_running() and time.time() < deadline:
        time.sleep(0.25)
    assert not sbx.is_running()
    assert sbx.sandbox_id not in [s.sandbox_id for s in Sandbox.list().next_items()]


def test_a_wrong_api_key_is_refused():
    with pytest.raises(AuthenticationException):
        Sandbox.create(api_key="e2b_" + "0" * 40)


def test_an_unknown_template_is_not_found():
    with pytest.raises(SandboxException) as err:
        Sandbox.create(template="no-such-template")
    assert "404" in str(err.value) and "not found" in str(err.value)


async def _async_round_trip():
    sbx = await AsyncSandbox.create(timeout=60)
    try:
        out = await sbx.commands.run("echo async")
        assert out.stdout.strip() == "async"
        await sbx.files.write("/home/user/async.txt", b"bytes")
        assert await sbx.files.read("/home/user/async.txt", format="bytes") == b"bytes"
    finally:
        await sbx.kill()


def test_the_async_sdk_too():
    import asyncio

    asyncio.run(_async_round_trip())


def test_pip_install_then_import_in_a_sandbox(sandbox):
    installed = sandbox.commands.run("pip install cowsay", timeout=180)
    assert "Successfully installed cowsay" in installed.stdout + installed.stderr
    cow = sandbox.commands.run("python3 -c 'import cowsay; cowsay.cow(\"hi\")'")
    assert "(oo)" in cow.stdout and "hi" in cow.stdout


def test_without_internet_a_registry_fails_fast_and_only_lo_is_there():
    probe = "curl -sS -m 20 -o /dev/null -w %{http_code} https://pypi.org/simple/cowsay/; echo \" rc=$?\""
    online = Sandbox.create(timeout=60)
    offline = Sandbox.create(timeout=60, allow_internet_access=False)
    try:
        assert online.commands.run(probe).stdout.strip() == "200 rc=0"
        started = time.time()
        out = offline.commands.run(probe).stdout
        assert "rc=0" not in out
        assert time.time() - started < 5, "fails fast, not after a timeout"
        links = offline.commands.run("ip -o link | cut -d: -f2").stdout.split()
        assert links == ["lo"]
    finally:
        online.kill()
        offline.kill()


def test_a_sandbox_reaches_neither_serve_nor_another_sandbox():
    port = URL.rsplit(":", 1)[1]
    server = Sandbox.create(timeout=60)
    client = Sandbox.create(timeout=60)
    try:
        server.commands.run("python3 -m http.server 8123 --bind 0.0.0.0", background=True)
        probe = "curl -sS -m 3 -o /dev/null -w %{http_code} http://127.0.0.1:8123/; echo \" rc=$?\""
        deadline = time.time() + 10
        while server.commands.run(probe).stdout.strip() != "200 rc=0" and time.time() < deadline:
            time.sleep(0.2)
        assert server.commands.run(probe).stdout.strip() == "200 rc=0", "the probe works where it may"
        address = server.commands.run("ip -4 -o addr show tap0 | awk '{print $4}' | cut -d/ -f1")
        other = f"curl -sS -m 3 -o /dev/null http://{address.stdout.strip()}:8123/; echo rc=$?"
        assert client.commands.run(other).stdout.strip().endswith("rc=7")
        to_serve = f"curl -sS -m 3 -o /dev/null http://10.0.2.2:{port}/; echo rc=$?"
        assert client.commands.run(to_serve).stdout.strip().endswith("rc=7")
    finally:
        server.kill()
        client.kill()


def test_signed_file_links_work_through_serve(sandbox):
    import httpx

    upload = sandbox.upload_url("/home/user/signed.txt", use_signature_expiration=60)
    answer = httpx.post(upload, files={"file": ("signed.txt", b"by link")})
    assert answer.status_code == 200, answer.text
    download = sandbox.download_url("/home/user/signed.txt", use_signature_expiration=60)
    assert httpx.get(download).content == b"by link"
    # A link signed with another token names no sandbox: the API refuses it.
    forged = download.replace("signature=", "signature=x")
    assert httpx.get(forged).status_code == 401


def test_metrics_windows_and_started_after(sandbox):
    import httpx

    now = int(time.time())
    assert len(sandbox.get_metrics()) == 1
    past = sandbox.get_metrics(
        start=datetime.datetime.fromtimestamp(now - 3600, datetime.timezone.utc),
        end=datetime.datetime.fromtimestamp(now - 1800, datetime.timezone.utc),
    )
    assert past == []
    headers = {"X-API-KEY": KEY}
    future = httpx.get(f"{URL}/v2/sandboxes?startedAfter=2099-01-01T00:00:00Z", headers=headers)
    assert future.status_code == 200 and future.json() == []
    past = httpx.get(f"{URL}/v2/sandboxes?startedAfter=2000-01-01T00:00:00Z", headers=headers)
    assert sandbox.sandbox_id in [s["sandboxID"] for s in past.json()]
    bad = httpx.get(f"{URL}/v2/sandboxes?startedAfter=yesterday", headers=headers)
    assert bad.status_code == 400


def test_set_timeout_zero_ends_the_sandbox():
    sbx = Sandbox.create(timeout=60)
    sbx.set_timeout(0)
    deadline = time.time() + 10
    while sbx.is_running() and time.time() < deadline:
        time.sleep(0.1)
    assert not sbx.is_running()


def test_python_is_python3_as_in_e2bs_base(sandbox):
    assert sandbox.commands.run("python --version").stdout.startswith("Python 3")
