"""kernelbox's launcher for the Python-based kernels (python3 and bash), installed by setup.sh.

    python kernelbox_launch.py MODULE ARGS...    runs what `python -m MODULE ARGS...` runs

It lifts pyzmq's send high-water mark on PUB sockets before the kernel creates its iopub socket.
At libzmq's default (1000 queued messages per subscriber) a PUB socket silently *drops* messages
for a reader that falls behind. bash_kernel publishes one message per output line, so an agent
busy with several large outputs lost lines, and sometimes the cell's `status: idle`, after which
the execution never ended. With no limit the kernel queues instead: the agent always drains its
sockets, and a kernel never outlives its agent.
"""

import runpy
import sys

import zmq

_socket = zmq.Context.socket


def _socket_that_queues(self, socket_type, *args, **kwargs):
    sock = _socket(self, socket_type, *args, **kwargs)
    if socket_type == zmq.PUB:
        sock.sndhwm = 0
    return sock


zmq.Context.socket = _socket_that_queues

if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: kernelbox_launch.py MODULE [ARGS...]")
    module = sys.argv[1]
    sys.argv = [module] + sys.argv[2:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
