"""Sandbox.run_code in the default Python context: streams, callbacks, results, errors."""

import base64
from datetime import datetime

from e2b_code_interpreter import ExecutionError, OutputMessage, Result
from e2b_code_interpreter.charts import ChartType, LineChart, ScaleType

from sdkutil import assert_ok, stderr_of, stdout_of


def test_callbacks_and_output_messages(sandbox, marker):
    seen_out, seen_err, seen_res, seen_errors = [], [], [], []
    execution = sandbox.run_code(
        f"import sys\nprint('out-{marker}')\nprint('err-{marker}', file=sys.stderr)\n41 + 1",
        on_stdout=seen_out.append,
        on_stderr=seen_err.append,
        on_result=seen_res.append,
        on_error=seen_errors.append,
    )
    assert_ok(execution)
    assert stdout_of(execution) == f"out-{marker}\n"
    assert stderr_of(execution) == f"err-{marker}\n"

    assert seen_out and all(isinstance(m, OutputMessage) for m in seen_out)
    assert "".join(m.line for m in seen_out) == f"out-{marker}\n"
    assert all(m.error is False for m in seen_out)
    assert seen_err and all(m.error is True for m in seen_err)
    assert "".join(m.line for m in seen_err) == f"err-{marker}\n"
    for m in seen_out + seen_err:
        # The SDK passes the server's `timestamp` through: ISO 8601 with an offset (spec §4.2).
        assert isinstance(m.timestamp, str) and m.timestamp, m
        assert datetime.fromisoformat(m.timestamp).tzinfo is not None, m.timestamp
        assert str(m) == m.line

    assert len(seen_res) == 1 and isinstance(seen_res[0], Result)
    assert seen_res[0].text == "42" and seen_res[0].is_main_result is True
    assert seen_errors == []
    assert execution.text == "42"
    assert execution.results == seen_res


def test_last_expression_text_and_quote_stripping(sandbox, marker):
    execution = sandbox.run_code(f"'hello-{marker}'")
    assert_ok(execution)
    assert execution.text == f"hello-{marker}"
    assert len(execution.results) == 1
    result = execution.results[0]
    assert result.is_main_result is True
    assert result.extra == {}
    assert list(result.formats()) == ["text"]

    execution = sandbox.run_code(f"x_{marker} = 6\nx_{marker} * 7")
    assert_ok(execution)
    assert execution.text == "42"


def test_no_result_for_statement(sandbox, marker):
    execution = sandbox.run_code(f"y_{marker} = 1")
    assert_ok(execution)
    assert execution.results == []
    assert execution.text is None
    assert execution.logs.stdout == [] and execution.logs.stderr == []


def test_display_data_results(sandbox, marker):
    execution = sandbox.run_code(
        "from IPython.display import display, HTML, Markdown\n"
        f"display(HTML('<b>one-{marker}</b>'))\n"
        f"display(Markdown('**two-{marker}**'))\n"
        f"display({{'application/x-kb-{marker}': 'zz', 'text/plain': 'p-{marker}'}}, raw=True)\n"
        f"'main-{marker}'"
    )
    assert_ok(execution)
    assert len(execution.results) == 4, execution.results
    first, second, third, main = execution.results
    assert first.is_main_result is False and first.html == f"<b>one-{marker}</b>"
    assert second.is_main_result is False and second.markdown == f"**two-{marker}**"
    assert third.is_main_result is False and third.text == f"p-{marker}"
    assert third.extra == {f"application/x-kb-{marker}": "zz"}
    assert f"application/x-kb-{marker}" in third.formats()
    assert main.is_main_result is True and main.text == f"main-{marker}"
    assert execution.text == f"main-{marker}"


def test_dict_gives_json(sandbox, marker):
    execution = sandbox.run_code(f"{{'k': [1, 2], 'm': '{marker}', 3: None}}")
    assert_ok(execution)
    result = execution.results[0]
    assert result.is_main_result is True
    assert result.json == {"k": [1, 2], "m": marker, "3": None}
    assert result.text == f"{{'k': [1, 2], 'm': '{marker}', 3: None}}"
    assert "json" in result.formats()


def test_matplotlib_png_and_line_chart(sandbox, marker):
    execution = sandbox.run_code(
        "import matplotlib.pyplot as plt\n"
        "fig, ax = plt.subplots()\n"
        "ax.plot([0, 1, 2], [0, 1, 4], label='sq')\n"
        f"ax.set_title('chart-{marker}')\n"
        "ax.set_xlabel('Time [s]')\n"
        "ax.set_ylabel('Value')\n"
        "plt.show()"
    )
    assert_ok(execution)
    assert len(execution.results) == 1, execution.results
    result = execution.results[0]
    assert result.is_main_result is False
    assert result.text.startswith("<Figure size"), result.text
    assert base64.b64decode(result.png)[:8] == b"\x89PNG\r\n\x1a\n"

    chart = result.chart
    assert isinstance(chart, LineChart), f"expected a LineChart, got {chart!r}"
    assert chart.type == ChartType.LINE
    assert chart.title == f"chart-{marker}"
    assert chart.x_label == "Time [s]" and chart.x_unit == "s"
    assert chart.y_label == "Value"
    assert chart.x_scale == ScaleType.LINEAR
    assert len(chart.elements) == 1
    assert chart.elements[0].label == "sq"
    assert [(float(x), float(y)) for x, y in chart.elements[0].points] == [(0, 0), (1, 1), (2, 4)]
    assert chart.to_dict()["type"] == "line"


def test_pandas_dataframe_gives_data_and_html(sandbox, marker):
    execution = sandbox.run_code(
        f"import pandas as pd\npd.DataFrame({{'a': [1, 2], 'b': ['x', '{marker}']}})"
    )
    assert_ok(execution)
    result = execution.results[0]
    assert result.is_main_result is True
    assert result.data == {"a": [1, 2], "b": ["x", marker]}
    assert "<table" in result.html
    assert marker in result.text
    assert {"text", "html", "data"} <= set(result.formats())


def test_exception_is_execution_error_not_raised(sandbox, marker):
    errors = []
    execution = sandbox.run_code(
        f"print('before-{marker}')\nraise ValueError('boom-{marker}')", on_error=errors.append
    )
    assert execution.error is not None
    assert isinstance(execution.error, ExecutionError)
    assert execution.error.name == "ValueError"
    assert execution.error.value == f"boom-{marker}"
    assert "ValueError" in execution.error.traceback
    assert f"boom-{marker}" in execution.error.traceback
    assert "\x1b[" not in execution.error.traceback, "tracebacks must have no ANSI colour codes"
    assert len(errors) == 1 and errors[0].name == "ValueError"
    assert stdout_of(execution) == f"before-{marker}\n"
    assert execution.results == []
    assert execution.execution_count is not None


def test_zero_division_traceback(sandbox):
    execution = sandbox.run_code("1/0")
    assert execution.error.name == "ZeroDivisionError"
    assert execution.error.value == "division by zero"
    assert "----> 1 1/0" in execution.error.traceback


def test_syntax_error(sandbox, marker):
    execution = sandbox.run_code(f"def f_{marker}(:\n    pass")
    assert execution.error is not None
    assert execution.error.name == "SyntaxError"
    assert execution.results == []


def test_execution_count_in_fresh_context(sandbox, context):
    first = sandbox.run_code("1", context=context)
    second = sandbox.run_code("2", context=context)
    third = sandbox.run_code("raise KeyError('k')", context=context)
    fourth = sandbox.run_code("4", context=context)
    assert first.execution_count == 1
    assert second.execution_count == 2
    assert third.execution_count == 3
    assert fourth.execution_count == 4


def test_unicode_round_trip(sandbox, marker):
    execution = sandbox.run_code(f"print('é😀-{marker}')\n'ü中-{marker}'")
    assert_ok(execution)
    assert stdout_of(execution) == f"é😀-{marker}\n"
    assert execution.text == f"ü中-{marker}"


def test_large_output(sandbox, marker):
    execution = sandbox.run_code(f"for i in range(20000):\n    print('{marker}', i)")
    assert_ok(execution)
    lines = stdout_of(execution).splitlines()
    assert len(lines) == 20000
    assert lines[0] == f"{marker} 0" and lines[-1] == f"{marker} 19999"


def test_execution_to_json(sandbox, marker):
    execution = sandbox.run_code(f"print('j-{marker}')\n{{'v': 1}}")
    assert_ok(execution)
    import json

    data = json.loads(execution.to_json())
    assert data["error"] is None
    # ipykernel writes print's text and newline separately and may flush between them under
    # load (its 0.2 s flush timer), so the lines are joined before comparing.
    assert "".join(json.loads(data["logs"])["stdout"]) == f"j-{marker}\n"
    assert data["results"][0]["json"] == {"v": 1}
