"""AsyncSandbox: the same API with coroutines and async callbacks."""

import asyncio

import pytest
from e2b_code_interpreter import AsyncSandbox, NotFoundException


def run(coro):
    return asyncio.run(coro)


def test_async_run_code_with_async_callbacks(url, marker):
    async def main():
        sbx = await AsyncSandbox.create(debug=True, sandbox_url=url)
        assert sbx.sandbox_id == "debug_sandbox_id"
        out, results, errors = [], [], []

        async def on_stdout(msg):
            await asyncio.sleep(0.01)  # really awaited by the SDK (#159 / #160)
            out.append(msg.line)

        async def on_result(result):
            await asyncio.sleep(0)
            results.append(result)

        execution = await sbx.run_code(
            f"print('async-{marker}')\n{{'a': 1}}",
            on_stdout=on_stdout,
            on_result=on_result,
            on_error=errors.append,
        )
        assert execution.error is None
        assert out == [f"async-{marker}\n"]
        assert len(results) == 1 and results[0].json == {"a": 1}
        assert errors == []
        assert execution.text == "{'a': 1}"
        await sbx.kill()

    run(main())


def test_async_contexts(url, marker, tmp_path):
    async def main():
        sbx = await AsyncSandbox.create(debug=True, sandbox_url=url)
        ctx = await sbx.create_code_context(language="python", cwd=str(tmp_path))
        try:
            assert ctx.cwd == str(tmp_path)
            await sbx.run_code(f"a_{marker} = 3", context=ctx)
            execution = await sbx.run_code(f"a_{marker} * 2", context=ctx)
            assert execution.text == "6"
            assert ctx.id in {c.id for c in await sbx.list_code_contexts()}
            await sbx.restart_code_context(ctx)
            execution = await sbx.run_code(f"a_{marker}", context=ctx)
            assert execution.error is not None and execution.error.name == "NameError"
        finally:
            await sbx.remove_code_context(ctx)
        with pytest.raises(NotFoundException):
            await sbx.run_code("1", context=ctx)

    run(main())


def test_async_parallel_contexts_run_concurrently(url, marker):
    async def main():
        sbx = await AsyncSandbox.create(debug=True, sandbox_url=url)
        a = await sbx.create_code_context(language="python")
        b = await sbx.create_code_context(language="python")
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            ea, eb = await asyncio.gather(
                sbx.run_code("import time\ntime.sleep(2)\n'a'", context=a),
                sbx.run_code("import time\ntime.sleep(2)\n'b'", context=b),
            )
            elapsed = loop.time() - started
            assert (ea.text, eb.text) == ("a", "b")
            assert elapsed < 3.8, f"two contexts did not run in parallel ({elapsed:.1f} s)"
        finally:
            await sbx.remove_code_context(a)
            await sbx.remove_code_context(b)

    run(main())
