"""Shared fixtures for kernelbox's official Python SDK compatibility suite.

The suite drives a running kernelbox agent with the unmodified PyPI SDK
(e2b-code-interpreter 2.11.5 on e2b 2.63.0, installed by tests/sdk/install.sh).

How it connects: `Sandbox.create(debug=True, sandbox_url=KERNELBOX_URL)`. In debug mode the SDK
skips the control plane entirely (sandbox id "debug_sandbox_id", no API key, no request on create
or kill) and `sandbox_url` sends every code-interpreter call to the agent's base URL.
"""

import os
import uuid

# Defence in depth: should anything in the SDK try to reach the control plane, send it to a closed
# loopback port instead of the internet. Set before the SDK builds any ConnectionConfig.
os.environ["E2B_API_URL"] = "http://127.0.0.1:9"
os.environ["E2B_DOMAIN"] = "kernelbox.invalid"
os.environ.pop("E2B_API_KEY", None)
os.environ.pop("E2B_ACCESS_TOKEN", None)

import httpx  # noqa: E402
import pytest  # noqa: E402

from e2b_code_interpreter import Sandbox  # noqa: E402

URL = os.environ.get("KERNELBOX_URL", "").rstrip("/")
# A second agent with an access token, for signed file URLs (test_files_io.py); optional.
SECURED_URL = os.environ.get("KERNELBOX_SECURED_URL", "").rstrip("/")


def pytest_configure(config):
    if not URL:
        raise pytest.UsageError(
            "KERNELBOX_URL is not set: start an agent (kernelbox agent --addr 127.0.0.1 --port 0 "
            "--workdir DIR --env KERNELBOX_SANDBOX_VAR=sandbox-value) and export "
            "KERNELBOX_URL=http://127.0.0.1:PORT, or run `cargo test --test sdk`"
        )


# Every HTTP request the SDK makes goes through httpx (with the SDK's pyqwest transport underneath).
# Record them all and fail the test if any of them goes anywhere but the agent.
REQUESTS = []
_orig_send = httpx.Client.send
_orig_async_send = httpx.AsyncClient.send


def _check(request):
    REQUESTS.append((request.method, str(request.url), dict(request.headers)))
    allowed = [URL + "/"] + ([SECURED_URL + "/"] if SECURED_URL else [])
    if not any(str(request.url).startswith(a) for a in allowed):
        raise AssertionError(f"the SDK tried to reach {request.url}, which is not the agent at {URL}")


def _send(self, request, *args, **kwargs):
    _check(request)
    return _orig_send(self, request, *args, **kwargs)


async def _async_send(self, request, *args, **kwargs):
    _check(request)
    return await _orig_async_send(self, request, *args, **kwargs)


httpx.Client.send = _send
httpx.AsyncClient.send = _async_send


@pytest.fixture(scope="session")
def url():
    return URL


@pytest.fixture(scope="session")
def sandbox():
    sbx = Sandbox.create(debug=True, sandbox_url=URL)
    assert sbx.sandbox_id == "debug_sandbox_id"
    yield sbx
    # A no-op in debug mode (no request), kept to show that kill() is safe against kernelbox.
    sbx.kill()


@pytest.fixture
def marker():
    """A unique identifier-safe token per test, so that tests running in parallel (or twice against
    the same agent) never see each other's variables, env vars or output."""
    return f"kb{os.getpid()}_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def context(sandbox, tmp_path):
    """A fresh Python context of this test's own, removed afterwards."""
    ctx = sandbox.create_code_context(language="python", cwd=str(tmp_path))
    yield ctx
    try:
        sandbox.remove_code_context(ctx)
    except Exception:
        pass

