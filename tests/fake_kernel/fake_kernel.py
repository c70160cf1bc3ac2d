"""A scripted Jupyter kernel for protocol edge cases real kernels produce only by accident.

Speaks the wire protocol with pyzmq directly (no ipykernel), so each cell's code names the odd
behaviour to show: replies before output, `abort` statuses, missing dates, badly signed frames,
messages the interpreter has no event for, errors only in the reply. Never used instead of the
real kernels; see tests/interpreter.rs for those.
"""
import hashlib
import hmac
import json
import os
import sys
import uuid
from datetime import datetime, timezone

import zmq

cfg = json.load(open(sys.argv[1]))
key = cfg["key"].encode()
ctx = zmq.Context()


def bind(kind, port):
    s = ctx.socket(kind)
    s.bind(f"tcp://{cfg['ip']}:{port}")
    return s


shell = bind(zmq.ROUTER, cfg["shell_port"])
control = bind(zmq.ROUTER, cfg["control_port"])
stdin = bind(zmq.ROUTER, cfg["stdin_port"])
iopub = bind(zmq.PUB, cfg["iopub_port"])
hb = bind(zmq.REP, cfg["hb_port"])
session = str(uuid.uuid4())
count = 0


def sign(parts, k=key):
    h = hmac.new(k, digestmod=hashlib.sha256)
    for p in parts:
        h.update(p)
    return h.hexdigest().encode()


def send(sock, ids, msg_type, content, parent, date=True, bad_sig=False, buffers=()):
    header = {"msg_id": str(uuid.uuid4()), "session": session, "username": "fake",
              "msg_type": msg_type, "version": "5.3"}
    if date:
        header["date"] = datetime.now(timezone.utc).isoformat()
    parts = [json.dumps(x).encode() for x in (header, parent, {}, content)]
    sig = sign(parts, b"wrong key" if bad_sig else key)
    sock.send_multipart(list(ids) + [b"<IDS|MSG>", sig] + parts + list(buffers))


def recv(sock):
    frames = sock.recv_multipart()
    i = frames.index(b"<IDS|MSG>")
    ids, sig, rest = frames[:i], frames[i + 1], frames[i + 2:i + 6]
    if not hmac.compare_digest(sig, sign(rest)):
        return None, None
    return ids, [json.loads(p) for p in rest]


def status(state, parent):
    send(iopub, [b"status"], "status", {"execution_state": state}, parent)


def stream(text, parent, **kw):
    send(iopub, [b"stream"], "stream", {"name": "stdout", "text": text}, parent, **kw)


def execute(ids, header, content):
    global count
    code = content.get("code", "")
    if content.get("silent"):
        status("busy", header)
        send(shell, ids, "execute_reply", {"status": "ok", "execution_count": count}, header)
        status("idle", header)
        return
    if code == "abort":
        # What ipykernel sends for a request queued behind a failed cell (and tslab's spelling).
        status("busy", header)
        send(shell, ids, "execute_reply", {"status": "abort"}, header)
        status("idle", header)
        return
    if code == "die":
        status("busy", header)
        os._exit(1)
    count += 1
    status("busy", header)
    send(iopub, [b"execute_input"], "execute_input", {"code": code, "execution_count": count}, header)
    if code == "reply-first":
        send(shell, ids, "execute_reply", {"status": "ok", "execution_count": count}, header)
        stream("after the reply\n", header)
        send(iopub, [b"execute_result"], "execute_result",
             {"data": {"text/plain": "'late result'"}, "metadata": {}, "execution_count": count}, header)
        status("idle", header)
        return
    if code == "odd-messages":
        stream("dropped: bad signature\n", header, bad_sig=True)
        stream("no date\n", header, date=False)
        send(iopub, [b"x"], "clear_output", {"wait": False}, header)
        send(iopub, [b"x"], "update_display_data", {"data": {"text/plain": "u"}, "metadata": {}, "transient": {"display_id": "d"}}, header)
        send(iopub, [b"x"], "comm_open", {"comm_id": "c", "target_name": "t", "data": {}}, header, buffers=[b"\x00\x01raw"])
        send(iopub, [b"x"], "status", {"execution_state": "starting"}, {})
        stream("still here\n", header)
    if code == "reply-error":
        # bash_kernel's way: the error exists only in the reply.
        send(shell, ids, "execute_reply", {"status": "error", "ename": "", "evalue": "2", "traceback": []}, header)
        status("idle", header)
        return
    send(shell, ids, "execute_reply", {"status": "ok", "execution_count": count}, header)
    status("idle", header)


poller = zmq.Poller()
for s in (shell, control, hb, stdin):
    poller.register(s, zmq.POLLIN)
while True:
    for sock, _ in poller.poll():
        if sock is hb:
            hb.send(hb.recv())
            continue
        if sock is stdin:
            sock.recv_multipart()
            continue
        ids, msg = recv(sock)
        if msg is None:
            continue
        header, _, _, content = msg
        t = header["msg_type"]
        if t == "kernel_info_request":
            status("busy", header)
            send(sock, ids, "kernel_info_reply", {"status": "ok", "protocol_version": "5.3",
                 "implementation": "fake", "language_info": {"name": "fake"}}, header)
            status("idle", header)
        elif t == "execute_request":
            execute(ids, header, content)
        elif t == "interrupt_request":
            send(sock, ids, "interrupt_reply", {"status": "ok"}, header)
        elif t == "shutdown_request":
            send(sock, ids, "shutdown_reply", {"status": "ok", "restart": False}, header)
            sys.exit(0)
