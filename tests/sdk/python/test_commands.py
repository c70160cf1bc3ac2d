"""Commands and terminals (`sbx.commands`, `sbx.pty`) through the sandbox API (port 49983).

With `sandbox_url`, the SDK sends these calls to the agent's one URL with `E2b-Sandbox-Port: 49983`.
"""

import os
import time

import pytest

from e2b import CommandExitException, PtySize, TimeoutException
from sdkutil import assert_ok, stdout_of

VENV_BIN = os.path.join(os.environ.get("KERNELBOX_HOME", os.path.expanduser("~/.kernelbox")), "python", "bin")


def test_run_in_the_foreground(sandbox, marker):
    result = sandbox.commands.run(f"echo {marker}; echo err >&2")
    assert result.exit_code == 0
    assert result.stdout == f"{marker}\n"
    assert result.stderr == "err\n"


def test_non_zero_exit_raises_with_the_output(sandbox):
    with pytest.raises(CommandExitException) as info:
        sandbox.commands.run("echo out; echo bad >&2; exit 3")
    assert info.value.exit_code == 3
    assert info.value.stdout == "out\n"
    assert info.value.stderr == "bad\n"
    assert info.value.error == "exit status 3"


def test_cwd_envs_user_and_sandbox_env(sandbox, tmp_path):
    result = sandbox.commands.run(
        'pwd; echo "$MY_VAR|$KERNELBOX_SANDBOX_VAR|$(id -un)|$HOME"',
        cwd=str(tmp_path),
        envs={"MY_VAR": "it's mine"},
        user="root",
    )
    assert result.stdout == f"{tmp_path}\nit's mine|sandbox-value|root|/root\n"


def test_the_kernels_python_and_pip_come_first_also_in_login_shells(sandbox):
    result = sandbox.commands.run("command -v python; command -v pip; command -v npm")
    python, pip, npm = result.stdout.splitlines()
    assert python == os.path.join(VENV_BIN, "python")
    assert pip == os.path.join(VENV_BIN, "pip")
    assert npm.endswith("/npm")


def test_background_then_wait(sandbox, marker):
    handle = sandbox.commands.run(f"sleep 0.5; echo {marker}", background=True)
    assert handle.pid > 0
    result = handle.wait()
    assert result.stdout == f"{marker}\n"


def test_timeout_kills_the_command(sandbox, tmp_path):
    flag = tmp_path / "flag"
    started = time.monotonic()
    with pytest.raises(TimeoutException):
        sandbox.commands.run(f"(sleep 2; touch {flag}) & sleep 60", timeout=1)
    assert time.monotonic() - started < 10
    time.sleep(2.5)
    assert not flag.exists(), "a process of the command outlived its timeout"


def test_stdin_send_and_close(sandbox, marker):
    handle = sandbox.commands.run("cat", background=True, stdin=True)
    sandbox.commands.send_stdin(handle.pid, f"{marker} ")
    handle.send_stdin(b"more")
    sandbox.commands.stream_input(handle.pid, [" streamed", b" too"])
    sandbox.commands.close_stdin(handle.pid)
    assert handle.wait().stdout == f"{marker} more streamed too"


def test_list_kill_and_connect(sandbox, marker):
    handle = sandbox.commands.run(f"sleep 0.8; echo {marker}; sleep 60", background=True)
    listed = {p.pid: p for p in sandbox.commands.list()}
    assert handle.pid in listed
    assert listed[handle.pid].cmd == "/bin/bash"
    assert listed[handle.pid].args[-1].startswith("sleep 0.8")

    seen = []
    other = sandbox.commands.connect(handle.pid)
    for stdout, _, _ in other:
        if stdout:
            seen.append(stdout)
            break
    assert "".join(seen) == f"{marker}\n"

    assert sandbox.commands.kill(handle.pid) is True
    with pytest.raises(CommandExitException) as info:
        handle.wait()
    assert info.value.exit_code == -1
    assert info.value.error == "signal: killed"
    assert handle.pid not in {p.pid for p in sandbox.commands.list()}
    assert sandbox.commands.kill(handle.pid) is False
    assert sandbox.commands.kill(4_000_000) is False


def test_connect_just_after_the_end_gets_the_end(sandbox):
    handle = sandbox.commands.run("exit 7", background=True)
    pid = handle.pid
    with pytest.raises(CommandExitException):
        handle.wait()
    late = sandbox.commands.connect(pid)
    with pytest.raises(CommandExitException) as info:
        late.wait()
    assert info.value.exit_code == 7


def test_pty_create_input_resize(sandbox):
    chunks = []
    terminal = sandbox.pty.create(PtySize(rows=24, cols=80), envs={"KB_PTY": "yes"})
    sandbox.pty.send_stdin(terminal.pid, b"stty size; echo $TERM $KB_PTY\n")
    time.sleep(0.5)
    sandbox.pty.resize(terminal.pid, PtySize(rows=30, cols=100))
    sandbox.pty.send_stdin(terminal.pid, b"stty size; exit 4\n")
    with pytest.raises(CommandExitException) as info:
        terminal.wait(on_pty=lambda data: chunks.append(bytes(data)))
    assert info.value.exit_code == 4
    text = b"".join(chunks).decode(errors="replace")
    for expected in ["24 80", "xterm-256color yes", "30 100"]:
        assert expected in text, f"{expected!r} not in {text!r}"


def test_pip_install_then_import_in_the_kernel(sandbox, context):
    sandbox.commands.run("pip uninstall -y cowsay")
    missing = sandbox.run_code("import cowsay", context=context)
    assert missing.error is not None and missing.error.name == "ModuleNotFoundError"

    sandbox.commands.run("pip install cowsay", timeout=300)
    try:
        fresh = sandbox.create_code_context(language="python")
        execution = sandbox.run_code('import cowsay; cowsay.cow("hi")', context=fresh)
        assert_ok(execution)
        assert "hi" in stdout_of(execution) and "^__^" in stdout_of(execution)
        sandbox.remove_code_context(fresh)
    finally:
        sandbox.commands.run("pip uninstall -y cowsay")


def test_npm_install_then_require_in_a_javascript_context(sandbox):
    sandbox.commands.run("npm uninstall cowsay; rm -rf node_modules/cowsay", timeout=300)
    sandbox.commands.run("npm install cowsay", timeout=300)
    ctx = sandbox.create_code_context(language="javascript")
    try:
        execution = sandbox.run_code(
            "const cowsay = require('cowsay'); console.log(cowsay.say({ text: 'hi' }))", context=ctx
        )
        assert_ok(execution)
        assert "hi" in stdout_of(execution) and "^__^" in stdout_of(execution)
    finally:
        sandbox.remove_code_context(ctx)


def test_async_commands_and_pty(url, marker):
    import asyncio

    from e2b_code_interpreter import AsyncSandbox

    async def main():
        sbx = await AsyncSandbox.create(debug=True, sandbox_url=url)
        out = []

        async def on_stdout(data):
            await asyncio.sleep(0)
            out.append(data)

        result = await sbx.commands.run(f"echo {marker}", on_stdout=on_stdout)
        assert result.stdout == f"{marker}\n" and "".join(out) == f"{marker}\n"

        handle = await sbx.commands.run("cat", background=True, stdin=True)
        await sbx.commands.send_stdin(handle.pid, "async input")
        await sbx.commands.close_stdin(handle.pid)
        assert (await handle.wait()).stdout == "async input"

        sleeper = await sbx.commands.run("sleep 60", background=True)
        assert sleeper.pid in [p.pid for p in await sbx.commands.list()]
        assert await sbx.commands.kill(sleeper.pid) is True
        with pytest.raises(CommandExitException):
            await sleeper.wait()

        chunks = []
        terminal = await sbx.pty.create(PtySize(rows=24, cols=80), on_data=chunks.append)
        await sbx.pty.send_stdin(terminal.pid, b"echo $((6*7)); exit\n")
        await terminal.wait()
        assert "42" in b"".join(bytes(c) for c in chunks).decode(errors="replace")
        await sbx.kill()

    asyncio.run(main())
