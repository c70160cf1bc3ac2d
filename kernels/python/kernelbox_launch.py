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
"""

import json
import os
import runpy
import sys

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

if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: kernelbox_launch.py MODULE [ARGS...]")
    module = sys.argv[1]
    sys.argv = [module] + sys.argv[2:]
    _kernel_ports.update(_read_kernel_ports(sys.argv))
    runpy.run_module(module, run_name="__main__", alter_sys=True)
