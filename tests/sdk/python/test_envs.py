"""Environment variables: per-request `envs=` in every language, and sandbox-level variables.

The agent under test is started with `--env KERNELBOX_SANDBOX_VAR=sandbox-value`.
"""

import pytest

from sdkutil import assert_ok, stdout_of

QUOTED = """it's a "quoted" value"""

# How to print an env var, and how to print it or "<unset>", in each language.
READ = {
    "python": lambda k: f"import os\nprint(os.environ[{k!r}])",
    "javascript": lambda k: f"console.log(process.env[{k!r}])",
    "bash": lambda k: f"printf '%s\\n' \"${k}\"",
    "r": lambda k: f"cat(Sys.getenv('{k}'), '\\n', sep = '')",
}
READ_OR_UNSET = {
    "python": lambda k: f"import os\nprint(os.environ.get({k!r}, '<unset>'))",
    "javascript": lambda k: f"console.log(process.env[{k!r}] === undefined ? '<unset>' : process.env[{k!r}])",
    "bash": lambda k: f"printf '%s\\n' \"${{{k}-<unset>}}\"",
    "r": lambda k: f"cat(Sys.getenv('{k}', unset = '<unset>'), '\\n', sep = '')",
}


@pytest.mark.parametrize("language", ["python", "javascript", "bash", "r"])
def test_per_request_env_with_quotes_does_not_leak(sandbox, marker, language):
    key = f"KB_ENV_{marker}"
    execution = sandbox.run_code(READ[language](key), language=language, envs={key: QUOTED})
    assert_ok(execution)
    assert stdout_of(execution) == QUOTED + "\n"

    after = sandbox.run_code(READ_OR_UNSET[language](key), language=language)
    assert_ok(after)
    assert stdout_of(after) == "<unset>\n", "a per-request env var leaked into the next execution"


@pytest.mark.parametrize("language", ["python", "bash"])
def test_per_request_env_tricky_values(sandbox, marker, language):
    values = {
        f"KB_A_{marker}": "back\\slash and $HOME and `echo no` and $(echo no)",
        f"KB_B_{marker}": "line one\nline two",
        f"KB_C_{marker}": "é😀 ünïcödé",
        f"KB_D_{marker}": "",
        f"KB_E_{marker}": "'''\"\"\"",
    }
    for key, value in values.items():
        execution = sandbox.run_code(READ[language](key), language=language, envs={key: value})
        assert_ok(execution)
        assert stdout_of(execution) == value + "\n", key


def test_several_env_vars_in_own_context(sandbox, context, marker):
    envs = {f"KB_X_{marker}": "x", f"KB_Y_{marker}": "y y"}
    execution = sandbox.run_code(
        f"import os\nprint(os.environ['KB_X_{marker}'] + '|' + os.environ['KB_Y_{marker}'])",
        context=context,
        envs=envs,
    )
    assert_ok(execution)
    assert stdout_of(execution) == "x|y y\n"
    after = sandbox.run_code(
        f"import os\nprint([k for k in os.environ if k.endswith('_{marker}')])", context=context
    )
    assert_ok(after)
    assert stdout_of(after) == "[]\n"


def test_env_vars_do_not_shift_line_numbers_or_count(sandbox, context, marker):
    first = sandbox.run_code("1", context=context)
    execution = sandbox.run_code(
        "x = 1\nraise ValueError('line two')", context=context, envs={f"KB_L_{marker}": "v"}
    )
    assert execution.error is not None and execution.error.name == "ValueError"
    assert "line 2" in execution.error.traceback, execution.error.traceback
    assert execution.execution_count == first.execution_count + 1


def test_env_vars_cleaned_up_after_error(sandbox, context, marker):
    key = f"KB_ERR_{marker}"
    failed = sandbox.run_code("raise RuntimeError('x')", context=context, envs={key: "v"})
    assert failed.error is not None
    after = sandbox.run_code(READ_OR_UNSET["python"](key), context=context)
    assert_ok(after)
    assert stdout_of(after) == "<unset>\n"


def test_sandbox_env_var_python(sandbox):
    execution = sandbox.run_code("import os\nos.environ.get('KERNELBOX_SANDBOX_VAR')")
    assert_ok(execution)
    assert execution.text == "sandbox-value"


def test_sandbox_env_var_javascript(sandbox):
    execution = sandbox.run_code("process.env.KERNELBOX_SANDBOX_VAR", language="javascript")
    assert_ok(execution)
    assert execution.text == "sandbox-value"


def test_sandbox_env_var_in_new_context(sandbox, context):
    execution = sandbox.run_code("import os\nos.environ.get('KERNELBOX_SANDBOX_VAR')", context=context)
    assert_ok(execution)
    assert execution.text == "sandbox-value"


def test_per_request_env_overrides_then_restores_sandbox_var(sandbox, context):
    execution = sandbox.run_code(
        "import os\nprint(os.environ['KERNELBOX_SANDBOX_VAR'])",
        context=context,
        envs={"KERNELBOX_SANDBOX_VAR": "override"},
    )
    assert_ok(execution)
    assert stdout_of(execution) == "override\n"
    after = sandbox.run_code("import os\nprint(os.environ.get('KERNELBOX_SANDBOX_VAR'))", context=context)
    assert_ok(after)
    assert stdout_of(after) == "sandbox-value\n"
