"""The official code-interpreter SDK (e2b-code-interpreter 2.11.5) against `kernelbox serve`:
`Sandbox.create()` with its default template, `code-interpreter-v1`, whose kernels are installed
inside the sandbox's own root. Configured as test_serve.py is (E2B_API_URL, E2B_SANDBOX_URL,
E2B_API_KEY pointing at the serve the Rust test started).
"""

import os

URL = os.environ["KERNELBOX_SERVE_URL"].rstrip("/")
os.environ.update(
    E2B_API_URL=URL,
    E2B_SANDBOX_URL=URL,
    E2B_API_KEY=os.environ["KERNELBOX_SERVE_KEY"],
    E2B_DOMAIN="kernelbox.invalid",
)
os.environ.pop("E2B_DEBUG", None)

import pytest  # noqa: E402
from e2b_code_interpreter import Sandbox  # noqa: E402


@pytest.fixture(scope="module")
def sandbox():
    sbx = Sandbox.create(timeout=300, envs={"CI_VAR": "from-create"}, metadata={"suite": "ci"})
    yield sbx
    sbx.kill()


def test_the_default_template_runs_code_with_state(sandbox):
    assert sandbox.get_info().template_id == "code-interpreter-v1"
    sandbox.run_code("kept = 41")
    execution = sandbox.run_code("kept + 1")
    assert execution.error is None
    assert execution.text == "42"


def test_sandbox_env_vars_reach_the_running_kernels(sandbox):
    assert sandbox.run_code("import os; os.environ['CI_VAR']").text == "from-create"
    js = sandbox.run_code("process.env.CI_VAR", language="javascript")
    assert js.text == "from-create"


def test_javascript_and_errors(sandbox):
    out = sandbox.run_code("console.log([1, 2, 3].map(x => x * 2).join(','))", language="js")
    assert out.logs.stdout == ["2,4,6\n"]
    failed = sandbox.run_code("1 / 0")
    assert failed.error is not None and failed.error.name == "ZeroDivisionError"


def test_files_and_commands_meet_the_kernel(sandbox):
    sandbox.files.write("/home/user/data.csv", "a,b\n1,2\n3,4\n")
    total = sandbox.run_code("import pandas as pd; int(pd.read_csv('/home/user/data.csv').sum().sum())")
    assert total.text == "10"
    assert sandbox.commands.run("id -un").stdout.strip() == "user"
    assert sandbox.commands.run("id -un", user="root").stdout.strip() == "root"
    assert sandbox.run_code("import os; os.getcwd()").text == "/home/user"


def test_pip_install_in_a_command_then_import_in_the_kernel(sandbox):
    sandbox.commands.run("pip install cowsay", timeout=180)
    cow = sandbox.run_code("import cowsay; cowsay.cow('hi')")
    assert cow.error is None, cow.error
    assert "(oo)" in "".join(cow.logs.stdout)


def test_a_pooled_sandbox_gets_the_callers_env_in_its_running_kernel():
    import time

    # serve keeps one ready code-interpreter-v1 sandbox (--pool-size 1); give it time to fill.
    time.sleep(6)
    asked = time.time()
    sbx = Sandbox.create(timeout=60, envs={"POOLED_VAR": "handed-out"})
    took = time.time() - asked
    try:
        # The sandbox's init (its agent) started before this create was asked for: pooled.
        agent_age = int(sbx.commands.run("ps -o etimes= -p 1").stdout.strip())
        assert agent_age >= took + 2, f"agent {agent_age} s old, create took {took:.1f} s"
        # Its kernel was already running, and still sees the caller's env var.
        execution = sbx.run_code("import os; os.environ['POOLED_VAR']")
        assert execution.text == "handed-out"
        js = sbx.run_code("process.env.POOLED_VAR", language="javascript")
        assert js.text == "handed-out"
    finally:
        sbx.kill()


def test_a_fork_bomb_is_contained_and_a_neighbour_still_answers(sandbox):
    import time

    from e2b import Sandbox as BaseSandbox

    bomb = BaseSandbox.create(timeout=60)
    try:
        bomb.commands.run("bomb() { bomb | bomb & }; bomb", background=True)
        time.sleep(3)
        # The neighbour's kernel answers while the bomb runs into its sandbox's pids limit.
        started = time.time()
        assert sandbox.run_code("6 * 7", timeout=60).text == "42"
        assert time.time() - started < 30
    finally:
        assert bomb.kill() is True
    assert not bomb.is_running()
    assert sandbox.run_code("6 * 8").text == "48"


def test_the_agent_answers_on_e2bs_ports_inside_the_sandbox(sandbox):
    probe = "curl -s -o /dev/null -w %{http_code} http://127.0.0.1:{port}/health"
    assert sandbox.commands.run(probe.replace("{port}", "49999")).stdout.strip() == "200"
    assert sandbox.commands.run(probe.replace("{port}", "49983")).stdout.strip() == "204"
