"""kernelbox's launcher for the Python-based kernels (python3 and bash), installed by setup.sh.

    python kernelbox_launch.py MODULE ARGS...    runs what `python -m MODULE ARGS...` runs

It lifts pyzmq's send high-water mark on PUB sockets before the kernel creates its iopub socket.
At libzmq's default (1000 queued messages per subscriber) a PUB socket silently *drops* messages
for a reader that falls behind. bash_kernel publishes one message per output line, so an agent
busy with several large outputs lost lines, and sometimes the cell's `status: idle`, after which
the execution never ended. With no limit the kernel queues instead: the agent always drains its
sockets, and a kernel never outlives its agent.

It also makes a kernel that cannot bind one of its connection file's ports exit at once. ipykernel
binds iopub and heartbeat in threads, and when either bind fails the process lives on without
listening: the agent waited a minute for nothing. Exiting lets the agent retry with fresh ports.
Other addresses (user code binding its own sockets) keep pyzmq's usual error.

For bash_kernel it also resynchronises the shell after an interrupt. bash_kernel talks to bash
through a pty and finds the end of each command by its prompt. An interrupt that lands outside
its one `except KeyboardInterrupt` (while it reads the cell's exit code, or while it waits for the
prompt after `^C`) leaves a prompt unread, and every later cell then reads the previous one's
output: its own output is lost and it fails with an empty-named error. After any interrupted
cell, the shell is asked to echo a fresh token and everything up to it and the next prompt is
dropped; if even that fails, bash is restarted (its state is lost, as on bash_kernel's own EOF).
"""

import functools
import json
import os
import runpy
import sys
import uuid

import zmq

_socket = zmq.Context.socket
_bind = zmq.Socket.bind
_kernel_ports = set()


def _socket_that_queues(self, socket_type, *args, **kwargs):
    sock = _socket(self, socket_type, *args, **kwargs)
    if socket_type == zmq.PUB:
        sock.sndhwm = 0
    return sock


def _bind_or_exit(self, addr):
    try:
        return _bind(self, addr)
    except zmq.ZMQError as e:
        port = addr.rsplit(":", 1)[-1]
        if e.errno == zmq.EADDRINUSE and port.isdigit() and int(port) in _kernel_ports:
            sys.stderr.write(f"kernelbox_launch: {addr} is taken; exiting so the agent retries\n")
            sys.stderr.flush()
            os._exit(98)
        raise


def _read_kernel_ports(argv):
    """The ports of the connection file named by `-f`, if it can be read."""
    if "-f" not in argv or argv.index("-f") + 1 >= len(argv):
        return set()
    try:
        with open(argv[argv.index("-f") + 1]) as f:
            info = json.load(f)
    except (OSError, ValueError):
        return set()
    names = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
    return {info[n] for n in names if isinstance(info.get(n), int) and info[n] > 0}


zmq.Context.socket = _socket_that_queues
zmq.Socket.bind = _bind_or_exit

def _resync_bash(kernel):
    child = kernel.bashwrapper.child
    token = uuid.uuid4().hex
    try:
        child.sendintr()
        # The echoed command line has the token split by '', so only the output matches.
        child.sendline(f"echo kernelbox_sync_''{token}")
        child.expect_exact(f"kernelbox_sync_{token}", timeout=10)
        kernel.bashwrapper._expect_prompt(timeout=10)
    except BaseException:
        kernel._start_bash()


def _patch_bash_kernel():
    from bash_kernel.kernel import BashKernel

    original = BashKernel.do_execute

    # wraps keeps the signature ipykernel inspects to decide which keywords it may pass.
    @functools.wraps(original)
    def do_execute(self, *args, **kwargs):
        try:
            reply = original(self, *args, **kwargs)
        except KeyboardInterrupt:
            _resync_bash(self)
            return {"status": "abort", "execution_count": self.execution_count}
        if reply.get("status") == "abort":
            _resync_bash(self)
        return reply

    BashKernel.do_execute = do_execute


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: kernelbox_launch.py MODULE [ARGS...]")
    module = sys.argv[1]
    sys.argv = [module] + sys.argv[2:]
    _kernel_ports.update(_read_kernel_ports(sys.argv))
    if module == "bash_kernel":
        _patch_bash_kernel()
    runpy.run_module(module, run_name="__main__", alter_sys=True)
