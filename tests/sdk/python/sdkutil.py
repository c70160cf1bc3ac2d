"""Small helpers shared by the test modules (imported as `from sdkutil import ...`)."""


def stdout_of(execution):
    return "".join(execution.logs.stdout)


def stderr_of(execution):
    return "".join(execution.logs.stderr)


def assert_ok(execution):
    """Fails with the execution's error, if any, so that kernel errors are visible in the report."""
    assert execution.error is None, (
        f"unexpected execution error {execution.error.name}: {execution.error.value}\n"
        f"{execution.error.traceback}"
    )
