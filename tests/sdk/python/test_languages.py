"""Languages other than Python through `run_code(language=...)` and language contexts."""

import pytest
from e2b_code_interpreter import TimeoutException

from sdkutil import assert_ok, stdout_of


@pytest.mark.parametrize("language", ["javascript", "js", "JavaScript"])
def test_javascript(sandbox, marker, language):
    execution = sandbox.run_code(
        f"const a_{marker} = 20;\nconsole.log('js-{marker}');\na_{marker} * 2 + 2",
        language=language,
    )
    assert_ok(execution)
    assert stdout_of(execution) == f"js-{marker}\n"
    assert execution.text == "42"


def test_javascript_string_result_and_top_level_await(sandbox, marker):
    execution = sandbox.run_code(f"await Promise.resolve('Hello {marker}!')", language="js")
    assert_ok(execution)
    assert execution.text == f"Hello {marker}!"


def test_javascript_error(sandbox, marker):
    execution = sandbox.run_code(f"throw new Error('jsboom-{marker}')", language="javascript")
    assert execution.error is not None
    assert f"jsboom-{marker}" in execution.error.value + execution.error.traceback


@pytest.mark.parametrize("language", ["typescript", "ts"])
def test_typescript(sandbox, marker, language):
    execution = sandbox.run_code(
        f"function add_{marker}(a: number, b: number): number {{ return a + b }}\n"
        f"const n_{marker}: number = add_{marker}(40, 2);\n"
        f"n_{marker}",
        language=language,
    )
    assert_ok(execution)
    assert execution.text == "42"


def test_javascript_context_with_cwd_keeps_state(sandbox, marker, tmp_path):
    ctx = sandbox.create_code_context(language="javascript", cwd=str(tmp_path))
    try:
        assert ctx.language == "javascript"
        assert ctx.cwd == str(tmp_path)
        execution = sandbox.run_code("process.cwd()", context=ctx)
        assert_ok(execution)
        assert execution.text == str(tmp_path)
        assert_ok(sandbox.run_code(f"globalThis.s_{marker} = 5", context=ctx))
        execution = sandbox.run_code(f"s_{marker} * 2", context=ctx)
        assert_ok(execution)
        assert execution.text == "10"
    finally:
        sandbox.remove_code_context(ctx)


def test_typescript_context(sandbox, marker):
    ctx = sandbox.create_code_context(language="ts")
    try:
        assert ctx.language == "typescript"
        execution = sandbox.run_code(f"const t_{marker}: string = 'typed'; t_{marker}", context=ctx)
        assert_ok(execution)
        assert execution.text == "typed"
    finally:
        sandbox.remove_code_context(ctx)


def test_bash(sandbox, marker):
    execution = sandbox.run_code(f"echo bash-{marker}\necho $((6 * 7))", language="bash")
    assert_ok(execution)
    assert stdout_of(execution) == f"bash-{marker}\n42\n"


def test_bash_context_cwd_envs_and_exit_code(sandbox, marker, tmp_path):
    # Spec §9 golden transcript: stderr of commands arrives as stdout; a failing last command is an
    # error with an empty name and the exit code as value.
    ctx = sandbox.create_code_context(language="bash", cwd=str(tmp_path))
    try:
        assert ctx.language == "bash"
        execution = sandbox.run_code(
            f"pwd; echo $FOO_{marker}; ls /nonexistent-{marker}",
            context=ctx,
            envs={f"FOO_{marker}": "barz"},
        )
        out = stdout_of(execution)
        assert out.startswith(f"{tmp_path}\nbarz\n"), out
        assert f"/nonexistent-{marker}" in out
        assert execution.error is not None
        assert execution.error.name == ""
        assert execution.error.value == "2"
    finally:
        sandbox.remove_code_context(ctx)


def test_r(sandbox, marker):
    execution = sandbox.run_code(f"x_{marker} <- c(1, 2, 3)\nsum(x_{marker}) * 7", language="r")
    assert_ok(execution)
    # IRkernel publishes values as display_data, so (as with E2B's server) the R result is not the
    # "main" result: read results[0], not execution.text.
    assert [r.text for r in execution.results] == ["[1] 42"]


def test_r_stdout_and_context(sandbox, marker, tmp_path):
    ctx = sandbox.create_code_context(language="r", cwd=str(tmp_path))
    try:
        assert ctx.language == "r"
        execution = sandbox.run_code(f"cat('r-{marker}\\n')\ngetwd()", context=ctx)
        assert_ok(execution)
        assert stdout_of(execution) == f"r-{marker}\n"
        assert [r.text for r in execution.results] == [f'[1] "{tmp_path}"']
    finally:
        sandbox.remove_code_context(ctx)


def test_java(sandbox, marker):
    # JJava (JShell): the value of the last expression is the main result, println goes to stdout.
    execution = sandbox.run_code(
        f'int a_{marker} = 20;\nSystem.out.println("java-{marker}");\na_{marker} * 2 + 2',
        language="java",
    )
    assert_ok(execution)
    assert stdout_of(execution) == f"java-{marker}\n"
    assert execution.text == "42"


def test_java_errors(sandbox, marker):
    execution = sandbox.run_code(
        f'throw new IllegalStateException("javaboom-{marker}");', language="java"
    )
    assert execution.error is not None
    assert execution.error.name == "RuntimeException"
    assert execution.error.value == f"java.lang.IllegalStateException, javaboom-{marker}"
    assert f"javaboom-{marker}" in execution.error.traceback
    execution = sandbox.run_code(f'int n_{marker} = "not an int";', language="java")
    assert execution.error is not None
    assert execution.error.name == "CompilationException"
    assert "incompatible types" in execution.error.traceback


def test_java_envs_are_system_properties(sandbox, marker):
    # As with E2B's Java kernel, per-request envs are system properties, removed afterwards;
    # sandbox-level variables are system properties too.
    key = f"FOO_{marker}"
    execution = sandbox.run_code(
        f'System.getProperty("{key}")', language="java", envs={key: "bar \"q\" é"}
    )
    assert_ok(execution)
    assert execution.text == "bar \"q\" é"
    execution = sandbox.run_code(f'System.getProperty("{key}", "default")', language="java")
    assert execution.text == "default"
    execution = sandbox.run_code('System.getProperty("KERNELBOX_SANDBOX_VAR")', language="java")
    assert execution.text == "sandbox-value"


def test_java_context_cwd_state_and_timeout(sandbox, marker, tmp_path):
    ctx = sandbox.create_code_context(language="java", cwd=str(tmp_path))
    try:
        assert ctx.language == "java"
        assert ctx.cwd == str(tmp_path)
        execution = sandbox.run_code('System.getProperty("user.dir")', context=ctx)
        assert_ok(execution)
        assert execution.text == str(tmp_path)
        assert_ok(sandbox.run_code(f"int kept_{marker} = 7;", context=ctx))
        with pytest.raises(TimeoutException):
            sandbox.run_code("while (true) {}", context=ctx, timeout=3)
        execution = sandbox.run_code(f"kept_{marker} * 6", context=ctx)
        assert_ok(execution)
        assert execution.text == "42"
    finally:
        sandbox.remove_code_context(ctx)
