"""Client-side timeouts: the SDK gives up, the server notices the disconnect and interrupts."""

import time

import pytest
from e2b_code_interpreter import TimeoutException

from sdkutil import assert_ok, stdout_of


def test_timeout_raises_and_kernel_is_interrupted(sandbox, context, marker):
    assert_ok(sandbox.run_code(f"kept_{marker} = 'still here'", context=context))

    started = time.monotonic()
    with pytest.raises(TimeoutException):
        sandbox.run_code(
            f"import time\ntime.sleep(30)\nfinished_{marker} = True", context=context, timeout=2
        )
    # 2.11.5's pyqwest transport fires at about twice the value (E2B#1881); never near 30 s.
    assert time.monotonic() - started < 12

    # The server interrupted the kernel when the client went away, so the context is free again
    # within a few seconds, keeps its state, and the sleeping cell never finished.
    started = time.monotonic()
    execution = sandbox.run_code(
        f"print(kept_{marker}, 'finished_{marker}' in globals())", context=context, timeout=10
    )
    elapsed = time.monotonic() - started
    assert_ok(execution)
    assert stdout_of(execution) == "still here False\n"
    assert elapsed < 8, f"the follow-up run took {elapsed:.1f} s: the kernel was not interrupted"


def test_timeout_in_default_context_then_default_works(sandbox, marker):
    with pytest.raises(TimeoutException):
        sandbox.run_code("import time\ntime.sleep(30)", timeout=1)
    started = time.monotonic()
    execution = sandbox.run_code(f"'after-{marker}'", timeout=10)
    assert_ok(execution)
    assert execution.text == f"after-{marker}"
    assert time.monotonic() - started < 8


def test_long_silent_execution_completes(sandbox, context):
    # Longer than the 5 s keepalive interval: keepalive lines must be ignored by the SDK.
    execution = sandbox.run_code(
        "import time\nprint('start', flush=True)\ntime.sleep(6)\nprint('done')", context=context
    )
    assert_ok(execution)
    assert stdout_of(execution) == "start\ndone\n"


@pytest.mark.parametrize(
    "language,setup,cell,check",
    [
        ("python", "kept = 41", "import asyncio\nawait asyncio.sleep(30)", "kept + 1"),
        ("js", "var kept = 41", "await new Promise(r => setTimeout(r, 30000))", "kept + 1"),
        ("js", "var kept = 41", "await new Promise(() => {})", "kept + 1"),
    ],
)
def test_timeout_on_an_awaiting_cell_keeps_state(sandbox, language, setup, cell, check):
    # A cell that awaits (not a busy loop) is abandoned when the client gives up, and the context
    # keeps its variables: no restart behind the user's back.
    context = sandbox.create_code_context(language=language)
    try:
        assert_ok(sandbox.run_code(setup, context=context))
        with pytest.raises(TimeoutException):
            sandbox.run_code(cell, context=context, timeout=1)
        execution = sandbox.run_code(check, context=context, timeout=10)
        assert_ok(execution)
        assert execution.text == "42"
    finally:
        sandbox.remove_code_context(context)
