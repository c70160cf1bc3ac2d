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
