"""sandbox.files.read / write / write_files over the sandbox API's plain HTTP /files routes, and
the signed download_url / upload_url of a sandbox that has an access token."""

import asyncio
import io
import os

import httpx
import pytest
from packaging.version import Version

from e2b import ConnectionConfig
from e2b import Sandbox as E2bSandbox
from e2b import AsyncSandbox
from e2b.exceptions import AuthenticationException, FileNotFoundException, SandboxException

SECURED_URL = os.environ.get("KERNELBOX_SECURED_URL", "").rstrip("/")
SECURED_TOKEN = os.environ.get("KERNELBOX_SECURED_TOKEN", "")


def test_write_and_read_text(sandbox, tmp_path):
    path = str(tmp_path / "hello.txt")
    info = sandbox.files.write(path, "hello, kernelbox ✓")
    assert info.path == path
    assert info.name == "hello.txt"
    assert sandbox.files.read(path) == "hello, kernelbox ✓"
    with open(path, encoding="utf-8") as f:
        assert f.read() == "hello, kernelbox ✓"


def test_bytes_round_trip_untouched(sandbox, tmp_path):
    data = bytes(range(256)) * 1000
    path = str(tmp_path / "nested" / "dir" / "blob.bin")
    sandbox.files.write(path, data)
    got = sandbox.files.read(path, format="bytes")
    assert isinstance(got, bytearray)
    assert bytes(got) == data


def test_streams_both_ways(sandbox, tmp_path):
    data = os.urandom(3 * 1024 * 1024)
    path = str(tmp_path / "stream.bin")
    # A file-like object goes as application/octet-stream, streamed.
    info = sandbox.files.write(path, io.BytesIO(data))
    assert info.path == path
    # An iterable of chunks too.
    sandbox.files.write(path + ".2", (data[i : i + 65536] for i in range(0, len(data), 65536)))
    with sandbox.files.read(path, format="stream") as stream:
        got = b"".join(stream)
    assert got == data
    with open(path + ".2", "rb") as f:
        assert f.read() == data


def test_gzip_both_ways(sandbox, tmp_path):
    data = b"compressible line\n" * 50000
    path = str(tmp_path / "gz.txt")
    sandbox.files.write(path, data, gzip=True)
    with open(path, "rb") as f:
        assert f.read() == data
    assert sandbox.files.read(path, format="bytes", gzip=True) == data


def test_write_files_several(sandbox, tmp_path):
    from e2b.sandbox.filesystem.filesystem import WriteEntry

    entries = [
        WriteEntry(path=str(tmp_path / "a.txt"), data="alpha"),
        WriteEntry(path=str(tmp_path / "sub" / "b.bin"), data=b"\x00\x01beta"),
        WriteEntry(path=str(tmp_path / "c.txt"), data="gamma"),
    ]
    infos = sandbox.files.write_files(entries)
    assert [i.path for i in infos] == [e["path"] for e in entries]
    assert sandbox.files.read(str(tmp_path / "a.txt")) == "alpha"
    assert sandbox.files.read(str(tmp_path / "sub" / "b.bin"), format="bytes") == b"\x00\x01beta"
    assert sandbox.files.read(str(tmp_path / "c.txt")) == "gamma"


def test_read_and_write_as_root(sandbox, tmp_path):
    path = str(tmp_path / "root.txt")
    sandbox.files.write(path, "as root", user="root")
    assert os.stat(path).st_uid == 0
    assert sandbox.files.read(path, user="root") == "as root"


def test_metadata(sandbox, tmp_path):
    path = str(tmp_path / "meta.txt")
    info = sandbox.files.write(path, "x", metadata={"Owner": "bob", "stage": "draft"})
    assert info.metadata == {"owner": "bob", "stage": "draft"}
    assert os.getxattr(path, "user.e2b.owner") == b"bob"
    info = sandbox.files.write(path, "y")
    assert not info.metadata
    assert "user.e2b.owner" not in os.listxattr(path)


def test_errors(sandbox, tmp_path):
    with pytest.raises(FileNotFoundException):
        sandbox.files.read(str(tmp_path / "missing.txt"))
    with pytest.raises(SandboxException):
        sandbox.files.read(str(tmp_path))
    with pytest.raises(AuthenticationException):
        sandbox.files.read(str(tmp_path / "x"), user="no-such-user-kb")


def test_async_write_and_read(url, tmp_path):
    async def main():
        sbx = await AsyncSandbox.create(debug=True, sandbox_url=url)
        path = str(tmp_path / "async.bin")
        data = os.urandom(200_000)
        await sbx.files.write(path, data)
        assert await sbx.files.read(path, format="bytes") == data
        assert await sbx.files.read(path, format="bytes", gzip=True) == data
        infos = await sbx.files.write_files(
            [
                {"path": str(tmp_path / "x.txt"), "data": "x"},
                {"path": str(tmp_path / "y.txt"), "data": "y"},
            ]
        )
        assert len(infos) == 2
        assert await sbx.files.read(str(tmp_path / "y.txt")) == "y"

    asyncio.run(main())


def secured_sandbox(token):
    """A sandbox as `Sandbox.create()` returns it outside debug mode, with an access token: the
    SDK then sends `X-Access-Token` and signs download/upload URLs."""
    headers = {"E2b-Sandbox-Id": "secured_sandbox", "E2b-Sandbox-Port": "49983"}
    if token:
        headers["X-Access-Token"] = token
    return E2bSandbox(
        sandbox_id="secured_sandbox",
        sandbox_domain=None,
        envd_version=Version("0.6.13"),
        envd_access_token=token,
        traffic_access_token=None,
        connection_config=ConnectionConfig(
            debug=True, sandbox_url=SECURED_URL, extra_sandbox_headers=headers
        ),
    )


needs_secured = pytest.mark.skipif(
    not SECURED_URL, reason="KERNELBOX_SECURED_URL is not set (run through `cargo test --test sdk`)"
)


@needs_secured
def test_signed_urls_with_an_access_token(tmp_path):
    sbx = secured_sandbox(SECURED_TOKEN)
    path = str(tmp_path / "signed.txt")

    # The SDK's own calls carry the token.
    sbx.files.write(path, "written with the token")
    assert sbx.files.read(path) == "written with the token"

    # A signed download URL works without any header; tampering breaks it.
    url = sbx.download_url(path)
    assert "signature=v1_" in url
    res = httpx.get(url)
    assert res.status_code == 200, res.text
    assert res.text == "written with the token"
    assert httpx.get(url.replace("signature=v1_", "signature=v1_x")).status_code == 401
    assert httpx.get(url.split("&signature=")[0]).status_code == 401

    # With an expiration, and as another user.
    url = sbx.download_url(path, user="root", use_signature_expiration=60)
    assert "signature_expiration=" in url
    assert httpx.get(url).text == "written with the token"

    # A signed upload URL takes a multipart POST.
    target = str(tmp_path / "uploaded.txt")
    url = sbx.upload_url(target)
    res = httpx.post(url, files={"file": ("ignored", b"via signed upload")})
    assert res.status_code == 200, res.text
    assert res.json()[0]["path"] == target
    with open(target) as f:
        assert f.read() == "via signed upload"
    # A download signature does not allow uploads.
    read_url = sbx.download_url(target)
    assert httpx.post(read_url, files={"file": ("x", b"nope")}).status_code == 401


@needs_secured
def test_no_token_is_refused(tmp_path):
    sbx = secured_sandbox(None)
    path = str(tmp_path / "nope.txt")
    with pytest.raises(AuthenticationException):
        sbx.files.write(path, "x")
    assert not os.path.exists(path)
    bad = secured_sandbox("wrong-token")
    with pytest.raises(AuthenticationException):
        bad.files.read(path)
