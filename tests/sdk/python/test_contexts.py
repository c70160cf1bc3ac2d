"""Code contexts: create, list, restart, remove, routing, and the SDK's error paths."""

import os

import pytest
from e2b_code_interpreter import (
    Context,
    InvalidArgumentException,
    NotFoundException,
    SandboxException,
)

from sdkutil import assert_ok, stdout_of


def test_create_python_context_with_cwd(sandbox, tmp_path):
    ctx = sandbox.create_code_context(language="python", cwd=str(tmp_path))
    try:
        assert isinstance(ctx, Context)
        assert ctx.id
        assert ctx.language == "python"
        assert ctx.cwd == str(tmp_path)
        execution = sandbox.run_code("import os\nos.getcwd()", context=ctx)
        assert_ok(execution)
        assert execution.text == str(tmp_path)
    finally:
        sandbox.remove_code_context(ctx)


def test_create_context_defaults_to_python(sandbox):
    ctx = sandbox.create_code_context()
    try:
        assert ctx.language == "python"
        assert ctx.cwd
        execution = sandbox.run_code("import sys\nsys.version_info[0]", context=ctx)
        assert_ok(execution)
        assert execution.text == "3"
    finally:
        sandbox.remove_code_context(ctx.id)


def test_context_keeps_state_and_is_isolated(sandbox, marker, tmp_path):
    a = sandbox.create_code_context(language="python", cwd=str(tmp_path))
    b = sandbox.create_code_context(language="python", cwd=str(tmp_path))
    try:
        assert a.id != b.id
        assert_ok(sandbox.run_code(f"v_{marker} = 'in-a'", context=a))
        execution = sandbox.run_code(f"v_{marker}", context=a)
        assert_ok(execution)
        assert execution.text == "in-a"

        other = sandbox.run_code(f"v_{marker}", context=b)
        assert other.error is not None and other.error.name == "NameError"

        default = sandbox.run_code(f"'v_{marker}' in globals()")
        assert_ok(default)
        assert default.text == "False"
    finally:
        sandbox.remove_code_context(a)
        sandbox.remove_code_context(b)


def test_list_code_contexts(sandbox, tmp_path):
    ctx = sandbox.create_code_context(language="python", cwd=str(tmp_path))
    try:
        contexts = sandbox.list_code_contexts()
        assert all(isinstance(c, Context) for c in contexts)
        by_id = {c.id: c for c in contexts}
        assert ctx.id in by_id
        assert by_id[ctx.id].language == "python"
        assert by_id[ctx.id].cwd == str(tmp_path)
        languages = {c.language for c in contexts}
        # The startup contexts (spec §3.5).
        assert {"python", "javascript"} <= languages, languages
        assert "default" not in by_id
    finally:
        sandbox.remove_code_context(ctx)


def test_restart_code_context(sandbox, marker, tmp_path):
    ctx = sandbox.create_code_context(language="python", cwd=str(tmp_path))
    try:
        assert_ok(sandbox.run_code(f"r_{marker} = 1", context=ctx))
        assert_ok(sandbox.run_code("2", context=ctx))

        assert sandbox.restart_code_context(ctx) is None

        gone = sandbox.run_code(f"r_{marker}", context=ctx)
        assert gone.error is not None and gone.error.name == "NameError"
        assert gone.execution_count == 1, "the execution count restarts at 1 after a restart"

        # kernelbox re-applies the context's cwd and the sandbox env vars after a restart (§10 B4/B5).
        execution = sandbox.run_code(
            "import os\n(os.getcwd(), os.environ.get('KERNELBOX_SANDBOX_VAR'))", context=ctx
        )
        assert_ok(execution)
        assert execution.text == f"('{tmp_path}', 'sandbox-value')"

        # Restart by id string too; the id does not change.
        sandbox.restart_code_context(ctx.id)
        assert ctx.id in {c.id for c in sandbox.list_code_contexts()}
        assert_ok(sandbox.run_code("1", context=ctx))
    finally:
        sandbox.remove_code_context(ctx)


def test_remove_code_context(sandbox, tmp_path):
    ctx = sandbox.create_code_context(language="python", cwd=str(tmp_path))
    assert sandbox.remove_code_context(ctx) is None
    assert ctx.id not in {c.id for c in sandbox.list_code_contexts()}
    with pytest.raises(NotFoundException) as info:
        sandbox.run_code("1", context=ctx)
    assert f"Context {ctx.id} not found" in str(info.value)
    with pytest.raises(NotFoundException):
        sandbox.remove_code_context(ctx.id)


def test_unknown_context_id_is_not_found(sandbox, marker):
    bogus = Context(f"nope-{marker}", "python", "/")
    with pytest.raises(NotFoundException) as info:
        sandbox.run_code("1", context=bogus)
    assert str(info.value) == f"Context nope-{marker} not found"
    with pytest.raises(NotFoundException):
        sandbox.restart_code_context(f"nope-{marker}")
    with pytest.raises(NotFoundException):
        sandbox.remove_code_context(f"nope-{marker}")


def test_context_and_language_is_invalid_argument(sandbox, context):
    with pytest.raises(InvalidArgumentException):
        sandbox.run_code("1", context=context, language="python")


def test_language_routes_to_default_contexts(sandbox, marker):
    assert_ok(sandbox.run_code(f"d_{marker} = 'shared'"))
    via_language = sandbox.run_code(f"d_{marker}", language="python")
    assert_ok(via_language)
    assert via_language.text == "shared"
    via_alias = sandbox.run_code(f"d_{marker}", context=Context("default", "python", "/"))
    assert_ok(via_alias)
    assert via_alias.text == "shared"
    assert_ok(sandbox.run_code(f"del d_{marker}"))


def test_language_names_are_normalised(sandbox, marker):
    execution = sandbox.run_code("1 + 1", language="  Python ")
    assert_ok(execution)
    assert execution.text == "2"


def test_unknown_language_is_server_error(sandbox, marker):
    with pytest.raises(SandboxException) as info:
        sandbox.run_code("1", language=f"nolang{marker}")
    assert not isinstance(info.value, NotFoundException)
    assert str(info.value).startswith("500"), str(info.value)
    with pytest.raises(SandboxException) as info:
        sandbox.create_code_context(language=f"nolang{marker}")
    assert str(info.value).startswith("500"), str(info.value)
    assert "Failed to create context" in str(info.value)


def test_missing_cwd_is_rejected(sandbox, marker, tmp_path):
    missing = os.path.join(str(tmp_path), f"missing-{marker}")
    before = {c.id for c in sandbox.list_code_contexts()}
    with pytest.raises(SandboxException) as info:
        sandbox.create_code_context(language="python", cwd=missing)
    assert "Failed to set working directory" in str(info.value), str(info.value)
    after = {c.id for c in sandbox.list_code_contexts()}
    assert after - before == set(), "a failed create must not leave a context behind"


def test_default_context_output_goes_to_callbacks_in_own_context(sandbox, context, marker):
    lines = []
    execution = sandbox.run_code(
        f"for i in range(3):\n    print('{marker}', i, flush=True)",
        context=context,
        on_stdout=lambda m: lines.append(m.line),
    )
    assert_ok(execution)
    assert "".join(lines) == stdout_of(execution)
    assert stdout_of(execution) == "".join(f"{marker} {i}\n" for i in range(3))
