# kernelbox: let SIGINT interrupt a cell that awaits (installed with the IPython profile).
#
# ipykernel runs a cell with top-level `await` as a task on its asyncio loop and, while it runs,
# turns SIGINT into a cancellation of that task. Its handler schedules the cancellation with
# tornado's add_callback, which from the loop's own thread is a plain call_soon: nothing wakes the
# loop, so the cell sleeps on until its timer (`await asyncio.sleep(30)`: 30 s) and only then sees
# the CancelledError. A wake-up fd fixes that: the C-level signal handler writes a byte to it, the
# loop's selector sees the byte and runs the scheduled cancellation at once.


def _kernelbox_wake_loop_on_signals():
    import asyncio
    import signal
    import socket

    installed = []

    def drain(sock):
        try:
            while sock.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def install(*_args):
        if installed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not under a running loop (yet): try again at the next cell
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        loop.add_reader(reader.fileno(), drain, reader)
        signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        installed.extend((reader, writer))

    get_ipython().events.register("pre_execute", install)  # noqa: F821 (IPython start-up file)


_kernelbox_wake_loop_on_signals()
del _kernelbox_wake_loop_on_signals
