//! The lifecycle of sandboxes: create from a template (a sandbox from the warm pool when one is
//! ready, else a fresh one: either way a started sandbox is then handed out by its agent's init
//! call), deadlines, kill with a recorded reason, and reclaim after a restart. Lifetimes live
//! here, not in the backend (which only spawns and kills), so a microVM backend gets them for
//! free.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tracing::Instrument;

use super::db::{Db, EndReason, Record};
use super::pool::{Pool, Ready};
use super::{link, ControlError};
use crate::envd::files::signature::{sign, Operation};
use crate::sandbox::{
    Backend, Bind, IdRange, Limits, NamespaceBackend, Network, Rootfs, SandboxId, SandboxSpec,
    Usage,
};
use crate::sys::time::now_millis;
use crate::template::{Manifest, TemplateError, TemplateStore};

/// The SDKs' default lifetime, also used when a create or connect names none (E2B's v1 REST
/// default of 15 s only surprises; see the control-plane spec §6).
pub const DEFAULT_TIMEOUT_SECS: u64 = 300;
/// How long a new sandbox's agent may take to answer `/health`.
const START_PATIENCE: Duration = Duration::from_secs(30);
/// How often the reaper looks for sandboxes whose agent died on its own.
const LIVENESS_TICK: Duration = Duration::from_secs(1);
/// How long the warm pool waits after a failed start before it tries again.
const POOL_RETRY: Duration = Duration::from_secs(5);
/// The version of envd the agent speaks (what E2B's SDKs check features against).
pub const ENVD_VERSION: &str = "0.6.13";

/// Where `serve` keeps its state and what it allows.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// `$KERNELBOX_HOME`: templates (shared by every instance on the host).
    pub home: PathBuf,
    /// This instance's own folder: its database, key file and sandbox folders. Another instance
    /// (a parallel test run) with another folder never touches them.
    pub state_dir: PathBuf,
    /// The `kernelbox` binary bound into every sandbox as its agent.
    pub agent_binary: PathBuf,
    /// The longest a sandbox may live (timeouts are clamped to it; `timeout: 0` means it).
    pub max_lifetime: Duration,
    pub ids: IdRange,
    pub limits: Limits,
    /// The host's CA bundle (`$SSL_CERT_FILE`, else Debian's), bound over the sandbox's so TLS
    /// through the host's proxy or with its private CA works inside as on the host.
    pub ca_bundle: Option<PathBuf>,
    /// Templates that keep ready sandboxes in the warm pool, and how many each.
    pub pooled: Vec<String>,
    pub pool_size: usize,
}

/// Where the host's CA bundle appears inside, and the variables that point tools at it (pip
/// and requests use their own bundle otherwise, Node its built-in one).
const CA_BUNDLE_INSIDE: &str = "/etc/ssl/certs/ca-certificates.crt";
const CA_BUNDLE_VARS: &[&str] = &[
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "PIP_CERT",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
];

impl ServeConfig {
    /// The host's CA bundle as `serve`'s own environment names it, else Debian's path.
    pub fn host_ca_bundle() -> Option<PathBuf> {
        std::env::var_os("SSL_CERT_FILE")
            .map(PathBuf::from)
            .into_iter()
            .chain([PathBuf::from(CA_BUNDLE_INSIDE)])
            .find(|p| p.is_file())
    }
}

/// A create call's parameters, as E2B's `NewSandbox(V2)` carries them.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    pub template_id: String,
    pub timeout_secs: Option<u64>,
    pub metadata: BTreeMap<String, String>,
    pub env_vars: BTreeMap<String, String>,
    /// E2B's `allow_internet_access` (default true): false leaves only `lo`.
    pub internet: bool,
}

/// A running sandbox: its record and how to reach its agent.
#[derive(Debug, Clone)]
struct Live {
    record: Record,
    socket: PathBuf,
    init_pid: u32,
}

/// Every sandbox this instance runs.
pub struct Sandboxes {
    config: ServeConfig,
    backend: Arc<dyn Backend>,
    templates: TemplateStore,
    db: Db,
    live: Mutex<HashMap<String, Live>>,
    /// Wakes the reaper when a deadline moves.
    deadlines_changed: Notify,
    pool: Pool,
    /// Wakes the refiller when a pooled sandbox was taken.
    pool_wanted: Notify,
}

impl Sandboxes {
    /// Opens the state, reclaims what a previous run of this state folder left (marking those
    /// sandboxes ended with reason `restart`), and returns the manager; run [`Sandboxes::reaper`]
    /// beside it.
    pub async fn start(config: ServeConfig) -> Result<Arc<Sandboxes>, ControlError> {
        crate::sys::private_dir(&config.state_dir).map_err(|e| {
            ControlError::Internal(format!("state folder {}: {e}", config.state_dir.display()))
        })?;
        let db = Db::open(&config.state_dir.join("state.db"))
            .map_err(|e| ControlError::Internal(format!("state database: {e}")))?;
        let backend: Arc<dyn Backend> = Arc::new(NamespaceBackend::with(
            config.state_dir.join("sandboxes"),
            &config.home,
            Rootfs::HostMinimal,
        ));
        let sandboxes = Arc::new(Sandboxes {
            templates: TemplateStore::at_home(&config.home),
            config,
            backend,
            db,
            live: Mutex::default(),
            deadlines_changed: Notify::new(),
            pool: Pool::default(),
            pool_wanted: Notify::new(),
        });
        sandboxes.reclaim().await?;
        Ok(sandboxes)
    }

    async fn reclaim(&self) -> Result<(), ControlError> {
        let left = self.db.running().map_err(db_error)?;
        for record in left {
            if let Ok(id) = SandboxId::new(&record.id) {
                if let Err(e) = self.backend.reclaim(&id).await {
                    tracing::warn!(sandbox = %record.id, "reclaim: {e}");
                }
            }
            self.db
                .end(&record.id, now_millis(), EndReason::Restart)
                .map_err(db_error)?;
            tracing::info!(sandbox = %record.id, "reclaimed a sandbox of the previous run");
        }
        // Sandboxes with no record: the warm pool's, and creates cut short. Every sandbox of
        // this instance has its folder here, and no other instance's has.
        let folders = self.config.state_dir.join("sandboxes");
        for entry in std::fs::read_dir(&folders).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if let Ok(id) = SandboxId::new(&name) {
                if let Err(e) = self.backend.reclaim(&id).await {
                    tracing::warn!(sandbox = %name, "reclaim: {e}");
                }
            }
        }
        Ok(())
    }

    /// Creates a sandbox and hands its agent the caller's settings; returns once it answers.
    pub async fn create(&self, request: CreateRequest) -> Result<Record, ControlError> {
        let span = tracing::info_span!("create", template = %request.template_id);
        self.create_as(SandboxId::random(), request)
            .instrument(span)
            .await
    }

    /// Creates from the warm pool when it can, else starts `id` now.
    async fn create_as(
        &self,
        id: SandboxId,
        request: CreateRequest,
    ) -> Result<Record, ControlError> {
        let manifest = self.manifest(&request.template_id)?;
        // Pooled sandboxes have the default shape: internet on.
        let pooled = if request.internet {
            let (ready, dead) = self.pool.take(&manifest.id, alive);
            for gone in dead {
                let _ = self.backend.kill(&gone.id).await;
            }
            self.pool_wanted.notify_one();
            ready
        } else {
            None
        };
        let ready = match pooled {
            Some(ready) => {
                tracing::info!(sandbox = %ready.id, "handing out a pooled sandbox");
                ready
            }
            None => self.start_ready(id, manifest, request.internet).await?,
        };
        self.hand_out(ready, request).await
    }

    fn manifest(&self, template: &str) -> Result<Manifest, ControlError> {
        self.templates
            .get(template)
            .map(|t| t.manifest)
            .map_err(|e| match e {
                TemplateError::NotFound(id) | TemplateError::InvalidId(id) => {
                    ControlError::TemplateNotFound(id)
                }
                other => ControlError::Internal(other.to_string()),
            })
    }

    /// Starts a sandbox of `manifest`'s template and waits until its agent answers, with a
    /// token of the control plane's in force (the hand-out replaces it).
    async fn start_ready(
        &self,
        id: SandboxId,
        manifest: Manifest,
        internet: bool,
    ) -> Result<Ready, ControlError> {
        let template = self
            .templates
            .get(&manifest.id)
            .map_err(|e| ControlError::Internal(e.to_string()))?;
        let mut rootfs = template
            .rootfs(self.config.ids)
            .map_err(|e| ControlError::Internal(e.to_string()))?;
        if let Some(bundle) = &self.config.ca_bundle {
            rootfs.binds.push(Bind {
                source: bundle.clone(),
                target: CA_BUNDLE_INSIDE.into(),
                writable: false,
            });
        }
        let spec = SandboxSpec {
            id: id.clone(),
            hostname: id.to_string(),
            rootfs: Some(rootfs),
            agent_binary: self.config.agent_binary.clone(),
            agent_args: vec![
                format!("--default-languages={}", manifest.kernels.join(",")),
                format!("--workdir={}", manifest.workdir),
            ],
            env: manifest
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            limits: self.config.limits.clone(),
            ids: self.config.ids,
            network: if internet {
                Network::UserMode
            } else {
                Network::None
            },
        };
        let handle = self
            .backend
            .spawn(spec)
            .await
            .map_err(|e| ControlError::CreateFailed(e.to_string()))?;
        let token = uuid::Uuid::new_v4().simple().to_string();
        let init = serde_json::json!({
            "accessToken": token,
            "envVars": self.sandbox_env(&id, &manifest, &BTreeMap::new()),
            "defaultUser": manifest.user,
            "defaultWorkdir": manifest.workdir,
        });
        let ready = async {
            if !link::wait_healthy(&handle.agent_socket, START_PATIENCE).await {
                return Err("the agent did not answer /health".to_string());
            }
            link::init(&handle.agent_socket, &init, None).await
        };
        if let Err(e) = ready.await {
            let _ = self.backend.kill(&id).await;
            return Err(ControlError::CreateFailed(e));
        }
        Ok(Ready {
            id,
            socket: handle.agent_socket,
            init_pid: handle.init_pid,
            token,
            manifest,
        })
    }

    /// What every process of a sandbox gets: the template's env, E2B's markers, the host's CA
    /// bundle, then the caller's.
    fn sandbox_env(
        &self,
        id: &SandboxId,
        manifest: &Manifest,
        caller: &BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        let mut env = manifest.env.clone();
        env.insert("E2B_SANDBOX".into(), "true".into());
        env.insert("E2B_SANDBOX_ID".into(), id.to_string());
        env.insert("E2B_TEMPLATE_ID".into(), manifest.id.clone());
        if self.config.ca_bundle.is_some() {
            for var in CA_BUNDLE_VARS {
                env.insert((*var).into(), CA_BUNDLE_INSIDE.into());
            }
        }
        env.extend(caller.clone());
        env
    }

    /// Binds a ready sandbox to its caller: a fresh token, the caller's env vars (which reach
    /// its running kernels), a deadline and a record.
    async fn hand_out(&self, ready: Ready, request: CreateRequest) -> Result<Record, ControlError> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let init = serde_json::json!({
            "accessToken": token,
            "envVars": self.sandbox_env(&ready.id, &ready.manifest, &request.env_vars),
        });
        if let Err(e) = link::init(&ready.socket, &init, Some(&ready.token)).await {
            let _ = self.backend.kill(&ready.id).await;
            return Err(ControlError::CreateFailed(e));
        }
        let now = now_millis();
        let limits = &self.config.limits;
        let record = Record {
            id: ready.id.to_string(),
            template_id: ready.manifest.id.clone(),
            client_id: "kernelbox".into(),
            started_at: now,
            end_at: now + self.lifetime_ms(request.timeout_secs),
            metadata: request.metadata,
            cpu_count: limits.cpus.map_or(1, |c| c.ceil().max(1.0) as u32),
            memory_mb: limits.memory_bytes.map_or(512, |b| b / (1024 * 1024)),
            envd_access_token: token,
            ended: None,
        };
        if let Err(e) = self.db.insert(&record) {
            let _ = self.backend.kill(&ready.id).await;
            return Err(db_error(e));
        }
        self.lock().insert(
            record.id.clone(),
            Live {
                record: record.clone(),
                socket: ready.socket,
                init_pid: ready.init_pid,
            },
        );
        self.deadlines_changed.notify_one();
        tracing::info!(sandbox = %record.id, "sandbox created");
        Ok(record)
    }

    /// Keeps `config.pool_size` ready sandboxes of every template in `config.pooled`, until
    /// `shutdown`; then kills the ones not handed out.
    pub async fn refill(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut stopping = false;
        while !stopping {
            let mut failed = false;
            for template in &self.config.pooled {
                if self.pool.len(template) >= self.config.pool_size {
                    continue;
                }
                let Ok(manifest) = self.manifest(template) else {
                    continue;
                };
                let id = SandboxId::random();
                let started = tokio::select! {
                    _ = &mut shutdown => {
                        stopping = true;
                        break;
                    }
                    started = self.start_ready(id, manifest, true) => started,
                };
                match started {
                    Ok(ready) => self.pool.put(ready),
                    Err(e) => {
                        tracing::warn!(%template, "warm pool: {e}");
                        failed = true;
                    }
                }
            }
            let full = self
                .config
                .pooled
                .iter()
                .all(|t| self.pool.len(t) >= self.config.pool_size);
            if stopping {
                break;
            }
            let wait = if failed { POOL_RETRY } else { LIVENESS_TICK };
            tokio::select! {
                _ = &mut shutdown => break,
                _ = self.pool_wanted.notified(), if full => {}
                _ = tokio::time::sleep(wait), if full || failed => {}
                _ = std::future::ready(()), if !full && !failed => {}
            }
        }
        for ready in self.pool.drain() {
            let _ = self.backend.kill(&ready.id).await;
        }
    }

    /// A running sandbox's record.
    pub fn get(&self, id: &str) -> Result<Record, ControlError> {
        self.lock()
            .get(id)
            .map(|l| l.record.clone())
            .ok_or_else(|| ControlError::SandboxNotFound(id.to_string()))
    }

    /// Every running sandbox, newest first.
    pub fn list(&self) -> Vec<Record> {
        let mut all: Vec<Record> = self.lock().values().map(|l| l.record.clone()).collect();
        all.sort_by(|a, b| b.started_at.cmp(&a.started_at).then(a.id.cmp(&b.id)));
        all
    }

    /// The running sandbox whose access token signed `signature` for this file operation (see
    /// [`crate::envd::files::signature::sign`]); expiry is left to its agent, which answers
    /// an expired link with envd's own error.
    pub fn signed_by(
        &self,
        path: &str,
        operation: Operation,
        username: &str,
        expiration: Option<i64>,
        signature: &str,
    ) -> Option<String> {
        self.lock()
            .values()
            .find(|l| {
                let expected = sign(
                    path,
                    operation,
                    username,
                    &l.record.envd_access_token,
                    expiration,
                );
                expected.as_bytes() == signature.as_bytes()
            })
            .map(|l| l.record.id.clone())
    }

    /// The agent's socket of a running sandbox (for the gateway).
    pub fn socket(&self, id: &str) -> Option<PathBuf> {
        self.lock().get(id).map(|l| l.socket.clone())
    }

    /// Ends a sandbox: every process dies and everything it held is freed.
    pub async fn kill(&self, id: &str, reason: EndReason) -> Result<(), ControlError> {
        let gone = self.lock().remove(id);
        let Some(live) = gone else {
            return Err(ControlError::SandboxNotFound(id.to_string()));
        };
        let _ = self.db.end(id, now_millis(), reason);
        if let Ok(sid) = SandboxId::new(&live.record.id) {
            if let Err(e) = self.backend.kill(&sid).await {
                tracing::warn!(sandbox = %id, "kill: {e}");
            }
        }
        tracing::info!(sandbox = %id, reason = reason.as_str(), "sandbox ended");
        Ok(())
    }

    /// `set_timeout`: the deadline becomes now + `secs` (clamped), shorter or longer.
    ///
    /// `timeout: 0` ends the sandbox at the next reaper tick (now + 0), as E2B's SDK tests
    /// expect; on create, 0 means the maximum instead (see [`Sandboxes::lifetime_ms`]).
    pub fn set_timeout(&self, id: &str, secs: u64) -> Result<Record, ControlError> {
        let end_at = now_millis() + self.clamped_ms(secs);
        self.move_deadline(id, |_| end_at)
    }

    /// `connect`: the deadline becomes at least now + `secs` (default 300 s); never shorter.
    pub fn connect(&self, id: &str, secs: Option<u64>) -> Result<Record, ControlError> {
        let at_least = now_millis() + self.lifetime_ms(secs);
        self.move_deadline(id, |current| current.max(at_least))
    }

    /// What a running sandbox uses now.
    pub async fn usage(&self, id: &str) -> Result<Usage, ControlError> {
        self.get(id)?;
        let sid = SandboxId::new(id).map_err(|_| ControlError::SandboxNotFound(id.into()))?;
        self.backend
            .usage(&sid)
            .await
            .map_err(|e| ControlError::Internal(e.to_string()))
    }

    fn move_deadline(
        &self,
        id: &str,
        new: impl FnOnce(i64) -> i64,
    ) -> Result<Record, ControlError> {
        let record = {
            let mut map = self.lock();
            let live = map
                .get_mut(id)
                .ok_or_else(|| ControlError::SandboxNotFound(id.to_string()))?;
            live.record.end_at = new(live.record.end_at);
            live.record.clone()
        };
        self.db.set_deadline(id, record.end_at).map_err(db_error)?;
        self.deadlines_changed.notify_one();
        Ok(record)
    }

    /// A create's or connect's lifetime in ms: absent = 300 s, 0 = the maximum (E2B#873: 0 is
    /// not "forever", and ending a sandbox at once on create helps nobody), anything clamped.
    fn lifetime_ms(&self, secs: Option<u64>) -> i64 {
        match secs.unwrap_or(DEFAULT_TIMEOUT_SECS) {
            0 => self.clamped_ms(u64::MAX),
            s => self.clamped_ms(s),
        }
    }

    /// `secs` in ms, at most the configured maximum lifetime.
    fn clamped_ms(&self, secs: u64) -> i64 {
        let max = self.config.max_lifetime.as_secs();
        secs.min(max) as i64 * 1000
    }

    /// Ends sandboxes at their deadline (reason `timeout`) and notices agents that died on
    /// their own (reason `init_died`), until `shutdown`; then kills every sandbox left
    /// (reason `restart`: this sandboxes do not outlive `serve`).
    pub async fn reaper(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let next = self.lock().values().map(|l| l.record.end_at).min();
            let wait = next.map_or(LIVENESS_TICK, |at| {
                Duration::from_millis((at - now_millis()).max(0) as u64).min(LIVENESS_TICK)
            });
            tokio::select! {
                _ = &mut shutdown => break,
                _ = self.deadlines_changed.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
            let now = now_millis();
            let ended: Vec<(String, EndReason)> = self
                .lock()
                .values()
                .filter_map(|l| {
                    if l.record.end_at <= now {
                        Some((l.record.id.clone(), EndReason::Timeout))
                    } else if !alive(l.init_pid) {
                        Some((l.record.id.clone(), EndReason::InitDied))
                    } else {
                        None
                    }
                })
                .collect();
            for (id, reason) in ended {
                let reason = match reason {
                    EndReason::InitDied => self.why_init_died(&id).await,
                    other => other,
                };
                let _ = self.kill(&id, reason).await;
            }
        }
        let all: Vec<String> = self.lock().keys().cloned().collect();
        for id in all {
            let _ = self.kill(&id, EndReason::Restart).await;
        }
    }

    /// `oom` if the sandbox's cgroup counted an OOM kill (its init is the one that matters, and
    /// the agent is the least likely victim, so a count means memory ran out), else `init_died`.
    /// Read before the kill removes the cgroup.
    async fn why_init_died(&self, id: &str) -> EndReason {
        let Ok(sid) = SandboxId::new(id) else {
            return EndReason::InitDied;
        };
        match self.backend.usage(&sid).await {
            Ok(usage) if usage.oom_kills > 0 => EndReason::Oom,
            _ => EndReason::InitDied,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether a host pid runs (not gone, not a zombie waiting to be reaped).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with(['Z', 'X'])
        })
        .unwrap_or(false)
}

fn db_error(e: rusqlite::Error) -> ControlError {
    ControlError::Internal(format!("state database: {e}"))
}
