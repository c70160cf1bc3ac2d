//! The transport: the five ZeroMQ sockets to one kernel, reader tasks that verify every frame, and
//! routing of replies and broadcasts to whoever sent the request (by `parent_header.msg_id`).
//!
//! Policy (when an execution is done, what to do on errors) lives in `interpreter`; this module
//! only moves signed messages.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use zeromq::{
    util::PeerIdentity, DealerSendHalf, DealerSocket, ReqSocket, Socket, SocketOptions, SocketRecv,
    SocketSend, SubSocket, ZmqMessage,
};

use super::wire::{self, Message, Signer};

#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("could not reserve a port: {0}")]
    Ports(std::io::Error),
    #[error("could not connect the {channel} channel: {source}")]
    Connect {
        channel: &'static str,
        source: zeromq::ZmqError,
    },
    #[error("could not send on the {channel} channel: {source}")]
    Send {
        channel: &'static str,
        source: zeromq::ZmqError,
    },
    #[error("the kernel did not answer {what} within {secs:.1} s")]
    Timeout { what: String, secs: f64 },
    #[error("the connection to the kernel is closed")]
    Closed,
    #[error("cannot sign messages to the kernel: {0}")]
    Signing(wire::WireError),
}

/// The contents of a Jupyter connection file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectionInfo {
    pub transport: String,
    pub ip: String,
    pub shell_port: u16,
    pub iopub_port: u16,
    pub stdin_port: u16,
    pub control_port: u16,
    pub hb_port: u16,
    pub key: String,
    pub signature_scheme: String,
}

/// Ports held open until the kernel is about to be spawned, so no other process can take them in
/// between (kernels such as tslab bind seconds after they start).
pub struct ReservedPorts {
    listeners: Vec<TcpListener>,
    leases: PortLeases,
}

/// A claim on each reserved port that every kernelbox process on the machine (in this network
/// namespace) respects, held from reservation until the kernel is up.
///
/// Between our release of a port and the kernel's bind (a second or more for Python) another
/// agent's reservation could take the same port; the kernel then fails to bind, and ipykernel
/// *hangs* when the failing socket is iopub or heartbeat. A lease is an abstract unix socket named
/// after the port: binding it is atomic, it needs no file, and it vanishes with its holder.
pub struct PortLeases(#[allow(dead_code)] Vec<UnixListener>);

impl ReservedPorts {
    /// Frees the ports for the kernel to bind; call right before spawning it, and keep the leases
    /// until it has answered.
    pub fn release(self) -> PortLeases {
        drop(self.listeners);
        self.leases
    }
}

impl ConnectionInfo {
    /// Reserves five loopback ports and makes a fresh signing key.
    ///
    /// Ports come from below the kernel's ephemeral range when there is room: between our release
    /// and the kernel's bind, any outgoing connection on the machine may be handed an ephemeral
    /// port, but never one of these. Other kernelbox processes skip ports we hold a lease on; a
    /// kernel that still dies during start-up is retried by `Kernel::launch`.
    pub fn reserve() -> Result<(ConnectionInfo, ReservedPorts), ConnectionError> {
        let mut listeners = Vec::with_capacity(5);
        let mut leases = Vec::with_capacity(5);
        let mut ports = [0u16; 5];
        let range = quiet_port_range();
        for port in &mut ports {
            let (l, lease) = bind_quiet_port(range).map_err(ConnectionError::Ports)?;
            *port = l.local_addr().map_err(ConnectionError::Ports)?.port();
            listeners.push(l);
            leases.push(lease);
        }
        let info = ConnectionInfo {
            transport: "tcp".into(),
            ip: "127.0.0.1".into(),
            shell_port: ports[0],
            iopub_port: ports[1],
            stdin_port: ports[2],
            control_port: ports[3],
            hb_port: ports[4],
            key: uuid::Uuid::new_v4().to_string(),
            signature_scheme: wire::SIGNATURE_SCHEME.into(),
        };
        let reserved = ReservedPorts {
            listeners,
            leases: PortLeases(leases),
        };
        Ok((info, reserved))
    }

    fn endpoint(&self, port: u16) -> String {
        format!("{}://{}:{}", self.transport, self.ip, port)
    }
}

/// Ports below the ephemeral range (`ip_local_port_range`), or `None` when there is no room.
fn quiet_port_range() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let low: u16 = text.split_whitespace().next()?.parse().ok()?;
    let (start, end) = (10_000u16, low.checked_sub(1)?);
    (end > start + 1_000).then_some((start, end))
}

const PICK_ATTEMPTS: usize = 64;

fn bind_quiet_port(range: Option<(u16, u16)>) -> std::io::Result<(TcpListener, UnixListener)> {
    if let Some((start, end)) = range {
        let span = u32::from(end - start) + 1;
        for _ in 0..PICK_ATTEMPTS {
            let pick = start + (uuid::Uuid::new_v4().as_u128() % u128::from(span)) as u16;
            if let Ok(pair) = lease_and_bind(pick) {
                return Ok(pair);
            }
        }
    }
    let mut last = None;
    for _ in 0..PICK_ATTEMPTS {
        let l = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))?;
        match lease(l.local_addr()?.port()) {
            Ok(lease) => return Ok((l, lease)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no port could be leased")))
}

fn lease_and_bind(port: u16) -> std::io::Result<(TcpListener, UnixListener)> {
    let lease = lease(port)?;
    let l = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))?;
    Ok((l, lease))
}

/// Claims `port` among kernelbox processes; fails with `AddrInUse` while another holds it.
fn lease(port: u16) -> std::io::Result<UnixListener> {
    let name = format!("kernelbox-port-lease-{port}");
    UnixListener::bind_addr(&UnixAddr::from_abstract_name(name.as_bytes())?)
}

/// Which socket a message came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Shell,
    IoPub,
    Stdin,
    Control,
}

impl Channel {
    fn name(self) -> &'static str {
        match self {
            Channel::Shell => "shell",
            Channel::IoPub => "iopub",
            Channel::Stdin => "stdin",
            Channel::Control => "control",
        }
    }
}

/// A message from the kernel, tagged with its channel.
#[derive(Debug)]
pub struct Incoming {
    pub channel: Channel,
    pub msg: Message,
}

type RouteMap = HashMap<String, mpsc::UnboundedSender<Incoming>>;

/// Receives every message whose parent is one request. Dropping it stops the routing.
pub struct Subscription {
    pub msg_id: String,
    rx: mpsc::UnboundedReceiver<Incoming>,
    routes: Arc<Mutex<RouteMap>>,
}

impl Subscription {
    /// The next message for this request, or `None` once the connection is closed.
    pub async fn recv(&mut self) -> Option<Incoming> {
        self.rx.recv().await
    }

    /// The next message if one is already queued.
    pub fn try_recv(&mut self) -> Option<Incoming> {
        self.rx.try_recv().ok()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Ok(mut map) = self.routes.lock() {
            map.remove(&self.msg_id);
        }
    }
}

/// An open connection to one kernel.
pub struct KernelConnection {
    session: String,
    signer: Signer,
    shell: tokio::sync::Mutex<DealerSendHalf>,
    control: tokio::sync::Mutex<DealerSendHalf>,
    routes: Arc<Mutex<RouteMap>>,
    hb_endpoint: String,
    readers: Vec<JoinHandle<()>>,
}

impl Drop for KernelConnection {
    fn drop(&mut self) {
        for task in &self.readers {
            task.abort();
        }
        // Close every subscription so nobody waits on a dead connection.
        if let Ok(mut map) = self.routes.lock() {
            map.clear();
        }
    }
}

impl KernelConnection {
    /// Connects all channels. The kernel must already be listening (see `process::wait_for_port`):
    /// zmq.rs retries with exponential backoff otherwise, which costs hundreds of milliseconds.
    pub async fn connect(info: &ConnectionInfo) -> Result<KernelConnection, ConnectionError> {
        let signer = Signer::new(&info.signature_scheme, info.key.as_bytes())
            .map_err(ConnectionError::Signing)?;
        let routes: Arc<Mutex<RouteMap>> = Arc::default();
        let timeout = Duration::from_secs(10);

        // The stdin DEALER must share the shell identity, or input requests go nowhere
        // (jupyter-kernels.md §6 item 7).
        let identity = PeerIdentity::try_from(uuid::Uuid::new_v4().to_string().into_bytes())
            .map_err(|source| ConnectionError::Connect {
                channel: "shell",
                source,
            })?;
        let dealer = |identity: Option<PeerIdentity>| {
            let mut opts = SocketOptions::default();
            opts.connect_timeout(timeout);
            if let Some(id) = identity {
                opts.peer_identity(id);
            }
            DealerSocket::with_options(opts)
        };

        let mut iopub = {
            let mut opts = SocketOptions::default();
            opts.connect_timeout(timeout);
            // Output can arrive as one frame of tens of megabytes; larger reads cut the number of
            // syscalls and buffer copies for it (the buffer shrinks again after short reads).
            opts.read_buffer(128, 4 << 20, 2);
            SubSocket::with_options(opts)
        };
        iopub
            .subscribe("")
            .await
            .map_err(|source| ConnectionError::Connect {
                channel: "iopub",
                source,
            })?;
        let mut shell = dealer(Some(identity.clone()));
        let mut stdin = dealer(Some(identity));
        let mut control = dealer(None);

        let connect_err = |channel| move |source| ConnectionError::Connect { channel, source };
        iopub
            .connect(&info.endpoint(info.iopub_port))
            .await
            .map_err(connect_err("iopub"))?;
        shell
            .connect(&info.endpoint(info.shell_port))
            .await
            .map_err(connect_err("shell"))?;
        stdin
            .connect(&info.endpoint(info.stdin_port))
            .await
            .map_err(connect_err("stdin"))?;
        control
            .connect(&info.endpoint(info.control_port))
            .await
            .map_err(connect_err("control"))?;

        let (shell_tx, shell_rx) = shell.split();
        let (_stdin_tx, stdin_rx) = stdin.split();
        let (control_tx, control_rx) = control.split();
        let readers = vec![
            spawn_reader(Channel::IoPub, iopub, signer.clone(), routes.clone()),
            spawn_reader(Channel::Shell, shell_rx, signer.clone(), routes.clone()),
            spawn_reader(Channel::Stdin, stdin_rx, signer.clone(), routes.clone()),
            spawn_reader(Channel::Control, control_rx, signer.clone(), routes.clone()),
        ];
        // `_stdin_tx` may be dropped: kernelbox never answers input requests (allow_stdin false);
        // the receive half keeps the socket and its identity alive.
        Ok(KernelConnection {
            session: uuid::Uuid::new_v4().to_string(),
            signer,
            shell: tokio::sync::Mutex::new(shell_tx),
            control: tokio::sync::Mutex::new(control_tx),
            routes,
            hb_endpoint: info.endpoint(info.hb_port),
            readers,
        })
    }

    pub fn session(&self) -> &str {
        &self.session
    }

    /// A request message in this connection's session.
    pub fn new_request(&self, msg_type: &str, content: Value) -> Message {
        Message::request(&self.session, msg_type, content)
    }

    /// Routes every later message whose parent is `msg_id` to the returned subscription.
    pub fn subscribe(&self, msg_id: &str) -> Subscription {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut map) = self.routes.lock() {
            map.insert(msg_id.to_string(), tx);
        }
        Subscription {
            msg_id: msg_id.to_string(),
            rx,
            routes: self.routes.clone(),
        }
    }

    pub async fn send(&self, channel: Channel, msg: &Message) -> Result<(), ConnectionError> {
        let frames = wire::encode(msg, &self.signer, &[]);
        let zmsg = ZmqMessage::try_from(frames).map_err(|_| ConnectionError::Closed)?;
        let err = |source| ConnectionError::Send {
            channel: channel.name(),
            source,
        };
        match channel {
            Channel::Shell => self.shell.lock().await.send(zmsg).await.map_err(err),
            Channel::Control => self.control.lock().await.send(zmsg).await.map_err(err),
            Channel::IoPub | Channel::Stdin => Err(ConnectionError::Closed),
        }
    }

    /// Sends `execute_request` and returns the subscription for its replies. `stop_on_error` is
    /// always false: HTTP executions are independent, and a failed cell must not abort the next
    /// request already queued (code-interpreter-api.md §10 B1).
    pub async fn execute(&self, code: &str, silent: bool) -> Result<Subscription, ConnectionError> {
        let msg = self.new_request(
            "execute_request",
            json!({
                "code": code,
                "silent": silent,
                "store_history": !silent,
                "user_expressions": {},
                "allow_stdin": false,
                "stop_on_error": false,
            }),
        );
        let sub = self.subscribe(msg.msg_id());
        self.send(Channel::Shell, &msg).await?;
        Ok(sub)
    }

    /// `kernel_info_request` until both its reply and an iopub message with that parent arrive,
    /// which proves the iopub subscription is live (jupyter-kernels.md §3.1 step 6).
    pub async fn handshake(&self, total: Duration) -> Result<Value, ConnectionError> {
        let deadline = tokio::time::Instant::now() + total;
        loop {
            let msg = self.new_request("kernel_info_request", json!({}));
            let mut sub = self.subscribe(msg.msg_id());
            self.send(Channel::Shell, &msg).await?;
            let attempt_end =
                (tokio::time::Instant::now() + Duration::from_millis(500)).min(deadline);
            let mut reply = None;
            let mut iopub_seen = false;
            while let Ok(next) = tokio::time::timeout_at(attempt_end, sub.recv()).await {
                let Some(incoming) = next else {
                    return Err(ConnectionError::Closed);
                };
                match incoming.channel {
                    Channel::Shell if incoming.msg.msg_type() == "kernel_info_reply" => {
                        reply = Some(incoming.msg.content)
                    }
                    Channel::IoPub => iopub_seen = true,
                    _ => {}
                }
                if iopub_seen {
                    if let Some(content) = reply.take() {
                        return Ok(content);
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ConnectionError::Timeout {
                    what: "kernel_info_request".into(),
                    secs: total.as_secs_f64(),
                });
            }
        }
    }

    /// Sends a control request (interrupt, shutdown) and waits for its reply.
    pub async fn control_request(
        &self,
        msg_type: &str,
        content: Value,
        timeout: Duration,
    ) -> Result<Value, ConnectionError> {
        let msg = self.new_request(msg_type, content);
        let mut sub = self.subscribe(msg.msg_id());
        self.send(Channel::Control, &msg).await?;
        let wait = async {
            while let Some(incoming) = sub.recv().await {
                if incoming.channel == Channel::Control {
                    return Ok(incoming.msg.content);
                }
            }
            Err(ConnectionError::Closed)
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| ConnectionError::Timeout {
                what: msg_type.to_string(),
                secs: timeout.as_secs_f64(),
            })?
    }

    /// One heartbeat probe on a fresh REQ socket (a REQ whose reply never came is stuck).
    /// A missed beat is a hint, not proof of death: some kernels block it while busy.
    pub async fn heartbeat(&self, timeout: Duration) -> bool {
        let probe = async {
            let mut req = ReqSocket::new();
            req.connect(&self.hb_endpoint).await.ok()?;
            req.send(ZmqMessage::from(b"ping".to_vec())).await.ok()?;
            req.recv().await.ok()
        };
        matches!(tokio::time::timeout(timeout, probe).await, Ok(Some(_)))
    }
}

fn spawn_reader<S>(
    channel: Channel,
    mut socket: S,
    signer: Signer,
    routes: Arc<Mutex<RouteMap>>,
) -> JoinHandle<()>
where
    S: SocketRecv + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            // zmq.rs's recv is ready without yielding while messages are queued, and the unbounded
            // send never waits: a kernel that floods (JJava sends a message per line) would keep
            // this loop on the worker thread and starve everything else, timeouts included.
            tokio::task::consume_budget().await;
            let frames: Vec<Bytes> = match socket.recv().await {
                Ok(m) => m.into_vec(),
                Err(e) => {
                    tracing::debug!(channel = channel.name(), error = %e, "kernel socket closed");
                    break;
                }
            };
            let msg = match wire::decode(frames, &signer) {
                Ok(msg) => msg,
                Err(e) => {
                    tracing::warn!(channel = channel.name(), error = %e, "dropped a bad kernel message");
                    continue;
                }
            };
            let Some(parent) = msg.parent_msg_id() else {
                tracing::trace!(
                    channel = channel.name(),
                    msg_type = msg.msg_type(),
                    "unparented message"
                );
                continue;
            };
            let tx = routes.lock().ok().and_then(|map| map.get(parent).cloned());
            match tx {
                Some(tx) => {
                    let _ = tx.send(Incoming { channel, msg });
                }
                None => tracing::trace!(
                    channel = channel.name(),
                    msg_type = msg.msg_type(),
                    "message for no pending request"
                ),
            }
        }
        // The socket is gone: end every subscription so waiters see `None`.
        if let Ok(mut map) = routes.lock() {
            map.clear();
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leased_port_is_skipped_until_the_lease_is_dropped() {
        let (info, reserved) = ConnectionInfo::reserve().unwrap();
        let leases = reserved.release();
        // The TCP port is free again, yet no other reservation may take it.
        assert!(TcpListener::bind(("127.0.0.1", info.iopub_port)).is_ok());
        let err = lease_and_bind(info.iopub_port).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
        drop(leases);
        assert!(lease_and_bind(info.iopub_port).is_ok());
    }

    #[test]
    fn concurrent_reservations_never_share_a_port() {
        let held: Vec<_> = (0..200)
            .map(|_| ConnectionInfo::reserve().unwrap())
            .map(|(info, reserved)| (info, reserved.release()))
            .collect();
        let mut ports: Vec<u16> = held
            .iter()
            .flat_map(|(i, _)| {
                [
                    i.shell_port,
                    i.iopub_port,
                    i.stdin_port,
                    i.control_port,
                    i.hb_port,
                ]
            })
            .collect();
        let total = ports.len();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), total);
    }
}
