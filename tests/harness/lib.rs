//! Test harness: a real nats-server process on a free port with a temporary store, and the
//! henvis services in-process on free loopback ports, talking real gRPC over real TCP.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use henvis_domain::Principal;
use henvis_domain::{Directory, Sector};
use henvis_proto::henvis::broker::v1::referral_service_client::ReferralServiceClient;
use tokio::sync::watch;
use tonic::{Request, transport::Channel};

pub mod bench;
pub mod browser;
pub mod census;

/// Where every test nats-server appends its log (`$TMPDIR/nats-server-test.log`).
pub fn nats_server_log() -> PathBuf {
    std::env::temp_dir().join("nats-server-test.log")
}

/// The nats-server binary: `$NATS_SERVER_BIN`, the project's pinned install, or `PATH`.
pub fn nats_server_bin() -> PathBuf {
    if let Ok(p) = std::env::var("NATS_SERVER_BIN") {
        return PathBuf::from(p);
    }
    let pinned = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/nats/bin/nats-server");
    if pinned.exists() {
        pinned
    } else {
        PathBuf::from("nats-server")
    }
}

/// Everything the services logged in this test process, at debug level for henvis crates.
static LOGS: std::sync::OnceLock<std::sync::Arc<std::sync::Mutex<Vec<u8>>>> = std::sync::OnceLock::new();

#[derive(Clone)]
struct LogWriter(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs (once) a global subscriber that captures every log line of the services.
fn capture_logs() {
    LOGS.get_or_init(|| {
        let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = LogWriter(buf.clone());
        let filter = tracing_subscriber::EnvFilter::new(
            "info,henvis_sector=debug,henvis_router=debug,henvis_bus=debug,henvis_runtime=debug",
        );
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init();
        buf
    });
}

/// The log text captured so far.
pub fn captured_logs() -> String {
    LOGS.get()
        .and_then(|b| b.lock().ok().map(|v| String::from_utf8_lossy(&v).into_owned()))
        .unwrap_or_default()
}

/// Waits until `f` returns `Some`, polling every 20 ms, for at most `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if start.elapsed() > limit {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A free port for a process the test starts, picked at random below Linux's ephemeral
/// range (32768–60999): the kernel never hands it to an outgoing connection in the moment
/// between this check and the process binding it (with many tests running at once, a port
/// from the ephemeral range was taken in that moment now and then).
fn free_port() -> anyhow::Result<u16> {
    use std::hash::{BuildHasher as _, Hasher as _};
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    for _ in 0..1000 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let port = 20_000 + u16::try_from(h.finish() % 12_000).unwrap_or(0);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One nats-server process of a [`NatsServer`].
struct Node {
    child: Option<Child>,
    port: u16,
    cluster_port: u16,
    monitor_port: u16,
    dir: tempfile::TempDir,
}

/// nats-server processes with JetStream on temporary stores, killed on drop: one server,
/// or a cluster of several on loopback ports.
pub struct NatsServer {
    nodes: Vec<Node>,
    pki: PathBuf,
    /// The PKI whose nats-server certificate the nodes present on their routes (the
    /// deployment's unless a test swaps it for a stranger's).
    route_pki: Option<PathBuf>,
    /// The `authorization` block the nodes run with (deploy/nats/auth.conf until an
    /// approved directory change asks for another).
    authorization: String,
    /// JetStream's store encryption key, when the store is encrypted (as shipped).
    store_key: Option<String>,
    /// `sync_interval: always` (as shipped: nothing acknowledged is lost in a crash), or
    /// the server's default (flushed to disk every two minutes), for benchmarks only.
    sync_always: bool,
}

/// An administrator of the default directory (`admin-1`, `admin-2`, `admin-3`).
pub fn admin(id: &str) -> Principal {
    #[allow(clippy::unwrap_used)] // ids the tests spell
    Principal::Admin(henvis_domain::PersonId::parse(id).unwrap())
}

/// Who tests check behind the services' back as: the router, whose rights are the widest
/// there are (administrators have none over NATS; the admin service only governs rules and
/// reads the audit).
pub fn inspector() -> Principal {
    Principal::Service("router".into())
}

/// Connects to a comma-separated list of server URLs over TLS as `principal` (the NATS
/// user its certificate maps to).
pub async fn connect_as(urls: &str, pki: &Path, principal: &Principal) -> anyhow::Result<async_nats::Client> {
    let addrs: Vec<async_nats::ServerAddr> = urls.split(',').map(str::parse).collect::<Result<_, _>>()?;
    let options = async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(5));
    Ok(henvis_bus::NatsIdentity::of(pki, principal)
        .apply(options)
        .connect(addrs)
        .await?)
}

impl NatsServer {
    /// Starts `n` servers (a cluster when `n > 1`) with client TLS (`verify_and_map`) and
    /// the shipped users and permissions (deploy/nats/auth.conf), certificates from `pki`;
    /// waits until JetStream answers.
    pub async fn start_cluster(n: usize, pki: &Path) -> anyhow::Result<Self> {
        Self::start_cluster_with(n, pki, true).await
    }

    /// As [`start_cluster`](Self::start_cluster), with JetStream's store encryption on (a
    /// fresh random key per server set, passed in the environment as in production) or off.
    pub async fn start_cluster_with(n: usize, pki: &Path, encrypted: bool) -> anyhow::Result<Self> {
        Self::start_cluster_synced(n, pki, encrypted, true).await
    }

    /// As [`start_cluster_with`](Self::start_cluster_with), with `sync_interval: always`
    /// (`sync_always`, as shipped) or the server's default interval (benchmarks compare both).
    pub async fn start_cluster_synced(
        n: usize,
        pki: &Path,
        encrypted: bool,
        sync_always: bool,
    ) -> anyhow::Result<Self> {
        let mut nodes = Vec::new();
        for _ in 0..n {
            nodes.push(Node {
                child: None,
                port: free_port()?,
                cluster_port: free_port()?,
                monitor_port: free_port()?,
                dir: tempfile::tempdir()?,
            });
        }
        let mut s = Self {
            nodes,
            pki: pki.to_owned(),
            route_pki: None,
            authorization: include_str!("../../deploy/nats/auth.conf").to_owned(),
            // nats-server parses the variable as a configuration value: a key that starts
            // with a letter and holds only letters and digits is read as a string
            store_key: encrypted
                .then(|| format!("k{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())),
            sync_always,
        };
        for i in 0..n {
            s.spawn_node(i)?;
        }
        for i in 0..n {
            s.await_node(i).await?;
        }
        Ok(s)
    }

    /// Runs every node with `authorization` from now on: its configuration is rewritten and
    /// the server reloads it without a restart (`nats-server --signal reload`), as an
    /// operator does after an approved directory change adds an agency. Returns once every
    /// running node has loaded it (the signal returns before the server acts on it).
    pub async fn reload_authorization(&mut self, authorization: &str) -> anyhow::Result<()> {
        let mut before = Vec::new();
        for i in 0..self.nodes.len() {
            before.push(self.config_load_time(i).await);
        }
        self.signal_reload(authorization)?;
        for (i, was) in before.into_iter().enumerate() {
            if self.nodes[i].child.is_none() {
                continue;
            }
            wait_for(
                "the server to load the new authorization",
                Duration::from_secs(30),
                || async {
                    let now = self.config_load_time(i).await;
                    (now.is_some() && now != was).then_some(())
                },
            )
            .await?;
        }
        Ok(())
    }

    async fn config_load_time(&self, i: usize) -> Option<String> {
        let varz = self.monitor(i, "/varz").await.ok()?;
        varz["config_load_time"].as_str().map(str::to_owned)
    }

    fn signal_reload(&mut self, authorization: &str) -> anyhow::Result<()> {
        self.authorization = authorization.to_owned();
        for i in 0..self.nodes.len() {
            let Some(pid) = self.nodes[i].child.as_ref().map(Child::id) else {
                continue;
            };
            std::fs::write(self.nodes[i].dir.path().join("nats.conf"), self.config(i))?;
            let status = Command::new(nats_server_bin())
                .arg("--signal")
                .arg(format!("reload={pid}"))
                .status()?;
            anyhow::ensure!(status.success(), "nats-server --signal reload failed: {status}");
        }
        Ok(())
    }

    fn spawn_node(&mut self, i: usize) -> anyhow::Result<()> {
        let conf = self.nodes[i].dir.path().join("nats.conf");
        std::fs::write(&conf, self.config(i))?;
        let n = &mut self.nodes[i];
        let child = Command::new(nats_server_bin())
            .env("HENVIS_NATS_STORE_KEY", self.store_key.as_deref().unwrap_or_default())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(nats_server_log())?,
            )
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (run deploy/install-nats-server.sh)",
                    nats_server_bin().display()
                )
            })?;
        n.child = Some(child);
        Ok(())
    }

    fn config(&self, i: usize) -> String {
        let routes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("nats-route://127.0.0.1:{}", n.cluster_port))
            .collect();
        let n = &self.nodes[i];
        let mut text = format!(
            "{}{}listen: 127.0.0.1:{}\nhttp: 127.0.0.1:{}\nserver_name: node-{i}\njetstream {{\n  store_dir: \"{}\"\n{}{}}}\n",
            // HENVIS_TEST_NATS_PROF_PORT=<port>: each node serves Go's pprof on port + its
            // index (docs/PERFORMANCE.md, profiling nats-server)
            std::env::var("HENVIS_TEST_NATS_PROF_PORT")
                .ok()
                .and_then(|p| p.parse::<u16>().ok())
                .map(|p| format!("prof_port: {}\n", usize::from(p) + i))
                .unwrap_or_default(),
            // HENVIS_TEST_NATS_TRACE=1: every protocol message in the server's log, for a
            // census of the messages per referral (docs/PERFORMANCE.md; slow, small runs only)
            if census::tracing() {
                "trace: true\nlogtime: true\nlogtime_utc: true\nmax_traced_msg_len: 1\n"
            } else {
                ""
            },
            n.port,
            n.monitor_port,
            n.dir.path().join("js").display(),
            if self.sync_always {
                "  sync_interval: always\n"
            } else {
                ""
            },
            // the key from the environment, as in deploy/nats/
            if self.store_key.is_some() {
                "  cipher: chachapoly\n  key: $HENVIS_NATS_STORE_KEY\n"
            } else {
                ""
            }
        );
        // client TLS and the shipped authorization, as in deploy/nats/
        let service = self.pki.join("service");
        text += &format!(
            "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify_and_map: true\n  timeout: 5\n}}\n",
            service.join("nats.pem").display(),
            service.join("nats.key").display(),
            self.pki.join("ca.pem").display()
        );
        text += &self.authorization;
        if routes.len() > 1 {
            // routes over mutual TLS, with the nats-server's own certificate as the one
            // authorised route identity (as in deploy/nats/cluster-route.conf)
            let route_pki = self.route_pki.as_deref().unwrap_or(&self.pki);
            let route_service = route_pki.join("service");
            text += &format!(
                "cluster {{\n  name: henvis-test\n  listen: 127.0.0.1:{}\n  routes: [{}]\n  tls {{\n    cert_file: \"{}\"\n    key_file: \"{}\"\n    ca_file: \"{}\"\n    verify_and_map: true\n    timeout: 5\n  }}\n  authorization {{\n    user: \"henvis://service/nats\"\n  }}\n}}\n",
                n.cluster_port,
                routes.join(", "),
                route_service.join("nats.pem").display(),
                route_service.join("nats.key").display(),
                route_pki.join("ca.pem").display()
            );
        }
        text
    }

    async fn await_node(&self, i: usize) -> anyhow::Result<()> {
        let url = format!("nats://127.0.0.1:{}", self.nodes[i].port);
        wait_for(
            "nats-server to accept clients with JetStream",
            // a cluster elects its JetStream leader slowly while heavy tests share the cores
            Duration::from_secs(90),
            || {
                let url = url.clone();
                async move {
                    let c = connect_as(&url, &self.pki, &inspector()).await.ok()?;
                    let js = async_nats::jetstream::new(c);
                    js.query_account().await.ok().map(|_| ())
                }
            },
        )
        .await
    }

    /// Adds a node that presents the route certificate of another PKI (a stranger's CA) and
    /// tries to join the cluster; returns its index.
    pub fn spawn_stranger(&mut self, stranger_pki: &Path) -> anyhow::Result<usize> {
        self.nodes.push(Node {
            child: None,
            port: free_port()?,
            cluster_port: free_port()?,
            monitor_port: free_port()?,
            dir: tempfile::tempdir()?,
        });
        let i = self.nodes.len() - 1;
        self.route_pki = Some(stranger_pki.to_owned());
        let spawned = self.spawn_node(i);
        self.route_pki = None;
        spawned?;
        Ok(i)
    }

    /// Node `i`'s JetStream `store_dir` (nats-server keeps `jetstream/` in it).
    pub fn store_dir(&self, i: usize) -> PathBuf {
        self.nodes[i].dir.path().join("js")
    }

    /// Every file of every node's JetStream store.
    pub fn store_files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            let Ok(entries) = std::fs::read_dir(dir) else { return };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.push(p);
                }
            }
        }
        let mut out = Vec::new();
        for n in &self.nodes {
            walk(&n.dir.path().join("js"), &mut out);
        }
        out
    }

    /// A node's monitoring endpoint, plain HTTP on loopback (e.g. `/routez`).
    pub async fn monitor(&self, i: usize, path: &str) -> anyhow::Result<serde_json::Value> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.nodes[i].monitor_port)).await?;
        tcp.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .await?;
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).await?;
        let text = String::from_utf8_lossy(&raw);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).context("an HTTP body")?;
        Ok(serde_json::from_str(body)?)
    }

    /// The first node's monitoring `/varz` (message counts, CPU), over plain HTTP on
    /// loopback.
    pub async fn varz(&self) -> anyhow::Result<serde_json::Value> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.nodes[0].monitor_port)).await?;
        tcp.write_all(b"GET /varz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").await?;
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).await?;
        let text = String::from_utf8_lossy(&raw);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).context("an HTTP body")?;
        Ok(serde_json::from_str(body)?)
    }

    /// The client URLs, comma-separated.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The client URL of node `i`.
    pub fn node_url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].port)
    }

    /// The process ids of the running nodes.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter_map(|n| n.child.as_ref().map(Child::id))
            .collect()
    }

    /// Kills node `i` (SIGKILL) and waits for it to exit.
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts node `i` again on its port and store, and waits until it answers.
    pub async fn start_node(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill_node(i);
        self.spawn_node(i)?;
        self.await_node(i).await
    }

    /// Kills every node (SIGKILL).
    pub fn kill(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill_node(i);
        }
    }

    /// Starts every node again on the same ports and stores.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        for i in 0..self.nodes.len() {
            self.spawn_node(i)?;
        }
        for i in 0..self.nodes.len() {
            self.await_node(i).await?;
        }
        Ok(())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A service binary of the workspace, built next to the running executable (a test in
/// `target/<profile>/deps`, or a binary such as henvis-bench in `target/<profile>`).
fn service_bin(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("target dir")?;
    let dir = if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().context("target dir")?
    } else {
        dir
    };
    Ok(dir.join(name))
}

/// Starts a service binary with `env`, its log appended to `<tmp>/<name>-test.log`.
fn spawn_service(name: &str, env: &[(&str, String)]) -> anyhow::Result<Child> {
    let bin = service_bin(name)?;
    let mut cmd = Command::new(&bin);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(std::env::temp_dir().join(format!("{name}-test.log")))?;
    cmd.env("HENVIS_LOG", "warn")
        .env("HENVIS_LOG_FORMAT", "json")
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (run `cargo build --workspace --bins` first; deploy/test.sh does)",
                bin.display()
            )
        })
}

/// Sends SIGTERM to `pid` (with the system's `kill`: the workspace forbids unsafe code).
pub fn terminate(pid: u32) -> anyhow::Result<()> {
    let status = Command::new("kill").arg("-TERM").arg(pid.to_string()).status()?;
    anyhow::ensure!(status.success(), "kill -TERM {pid}: {status}");
    Ok(())
}

/// A free loopback address for a service's port, outside the kernel's ephemeral range: a
/// service on port 0 could take one of 50050-50055, the deployment scripts' fixed ports,
/// while a `deployment::` test runs them.
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(format!("127.0.0.1:{}", free_port()?).parse()?)
}

/// `GET http://<addr><path>`: the status code and the body as text.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    use http_body_util::BodyExt as _;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let response = client.get(format!("http://{addr}{path}").parse()?).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The value of the metric sample `name{labels}` (labels exactly as encoded, in order), if
/// the text has it.
pub fn metric(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// A sector service running as its own process (the real binary) on a fixed port, so
/// clients reconnect to the same address after a restart. Killed on drop.
pub struct SectorProcess {
    child: Child,
    sector: Sector,
    env: Vec<(&'static str, String)>,
    addr: SocketAddr,
}

impl SectorProcess {
    /// Its sector.
    pub fn sector(&self) -> Sector {
        self.sector
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: open inbox streams break, nothing is acknowledged or given back.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM: the service drains and stops on its own.
    pub fn terminate(&self) -> anyhow::Result<()> {
        terminate(self.child.id())
    }

    /// Whether the process has ended (with its exit status).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Starts the service again with the same settings and port; waits until it answers.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9();
        self.child = spawn_service(&format!("henvis-{}", self.sector), &self.env)?;
        wait_listening(self.addr).await
    }
}

impl Drop for SectorProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

async fn wait_listening(addr: SocketAddr) -> anyhow::Result<()> {
    wait_for("a service to listen", Duration::from_secs(30), || async move {
        tokio::net::TcpStream::connect(addr).await.ok().map(|_| ())
    })
    .await
}

/// A router running as its own process (the real binary), killed on drop.
pub struct RouterProcess(Child);

impl RouterProcess {
    /// Starts `henvis-router` against `nats_url`.
    pub fn spawn(nats_url: &str, duplicate_window_secs: u64, pki_dir: &Path) -> anyhow::Result<Self> {
        Self::spawn_with(nats_url, duplicate_window_secs, pki_dir, &[])
    }

    /// [`spawn`](Self::spawn) with `extra` settings.
    pub fn spawn_with(
        nats_url: &str,
        duplicate_window_secs: u64,
        pki_dir: &Path,
        extra: &[(&'static str, String)],
    ) -> anyhow::Result<Self> {
        let replicas = if nats_url.contains(',') { "3" } else { "1" };
        let mut env = vec![
            ("HENVIS_NATS_URL", nats_url.to_owned()),
            ("HENVIS_ROUTER_LISTEN", free_addr()?.to_string()),
            ("HENVIS_DUPLICATE_WINDOW_SECS", duplicate_window_secs.to_string()),
            ("HENVIS_STREAM_REPLICAS", replicas.to_owned()),
            ("HENVIS_PKI_DIR", pki_dir.display().to_string()),
        ];
        env.extend(extra.iter().cloned());
        Ok(Self(spawn_service("henvis-router", &env)?))
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// SIGKILL: the router gets no chance to finish anything.
    pub fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl RouterProcess {
    /// SIGTERM: the router drains and stops on its own.
    pub fn terminate(&self) -> anyhow::Result<()> {
        terminate(self.0.id())
    }
}

impl Drop for RouterProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A whole henvis deployment: nats-server, the four sector services and the router.
pub struct Deployment {
    /// The server.
    pub nats: NatsServer,
    /// Sector service endpoints.
    pub endpoints: HashMap<Sector, SocketAddr>,
    /// The agency directory in use.
    pub directory: Directory,
    /// The first router's gRPC endpoint (health, reflection).
    pub router: SocketAddr,
    /// The admin service's gRPC endpoint.
    pub admin: SocketAddr,
    stop: watch::Sender<bool>,
    services: HashMap<Sector, (watch::Sender<bool>, tokio::task::JoinHandle<anyhow::Result<()>>)>,
    options: Options,
    /// A connection that opens sealed payloads, made on first use.
    opener: tokio::sync::OnceCell<henvis_bus::Bus>,
    _creds: tempfile::TempDir,
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// Settings a test may change.
#[derive(Debug, Clone)]
pub struct Options {
    /// Seconds before an unclaimed urgent alert is escalated.
    pub urgent_alert_deadline_secs: u64,
    /// JetStream de-duplication window in seconds.
    pub duplicate_window_secs: u64,
    /// Whether to run a router in-process (crash tests run the router binary instead).
    pub in_process_router: bool,
    /// Offers of one inbox delivery before it is dead-lettered.
    pub inbox_max_attempts: i64,
    /// Seconds an inbox delivery may stay unacknowledged before it is offered again.
    pub ack_wait_secs: u64,
    /// nats-server processes: 1, or 3 for a cluster with R3 streams.
    pub nats_nodes: usize,
    /// Seconds stored events and undelivered deliveries are kept.
    pub retention_secs: u64,
    /// Seconds before expiry that an unacknowledged delivery raises an alert.
    pub expiry_warning_secs: u64,
    /// Byte limit of IN and OUT.
    pub stream_max_bytes: i64,
    /// Each agency's share of IN (units).
    pub agency_quota: i64,
    /// Each recipient's share of OUT (deliveries per message type).
    pub recipient_share: i64,
    /// JetStream store encryption (on, as shipped; off only to show what it protects).
    pub store_encryption: bool,
    /// Seconds after closure that a case's data is erased.
    pub closed_case_retention_secs: u64,
    /// `sync_interval: always` (as shipped), or the server's default (benchmarks only).
    pub sync_always: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            urgent_alert_deadline_secs: 900,
            duplicate_window_secs: 600,
            in_process_router: true,
            inbox_max_attempts: 10,
            ack_wait_secs: 30,
            nats_nodes: 1,
            retention_secs: 30 * 24 * 3600,
            expiry_warning_secs: 3 * 24 * 3600,
            stream_max_bytes: 1 << 30,
            agency_quota: henvis_bus::Topology::default().agency_quota,
            recipient_share: henvis_bus::Topology::default().recipient_share,
            store_encryption: true,
            closed_case_retention_secs: 365 * 24 * 3600,
            sync_always: true,
        }
    }
}

impl Deployment {
    /// Starts everything and waits until each service answers.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(Options::default()).await
    }

    /// Starts everything with `options`.
    pub async fn start_with(options: Options) -> anyhow::Result<Self> {
        capture_logs();
        let directory = Directory::denmark()?;
        let creds = tempfile::tempdir()?;
        henvis_pki::DevPki::create(creds.path(), &directory)?;
        let nats = NatsServer::start_cluster_synced(
            options.nats_nodes.max(1),
            creds.path(),
            options.store_encryption,
            options.sync_always,
        )
        .await?;
        let (stop, _) = watch::channel(false);
        let mut d = Self {
            nats,
            endpoints: HashMap::new(),
            directory,
            router: "127.0.0.1:1".parse()?,
            admin: "127.0.0.1:1".parse()?,
            stop,
            services: HashMap::new(),
            options,
            opener: tokio::sync::OnceCell::new(),
            _creds: creds,
        };
        for sector in Sector::ALL {
            d.start_sector(sector).await?;
        }
        if d.options.in_process_router {
            d.router = d.start_router().await?;
        }
        d.admin = d.start_admin().await?;
        Ok(d)
    }

    /// Starts one admin service in-process on a fresh port; returns its address.
    pub async fn start_admin(&self) -> anyhow::Result<SocketAddr> {
        self.start_admin_with(None).await
    }

    /// Starts one more admin service in-process whose web console listens on a fresh port;
    /// returns the console's address.
    pub async fn start_admin_console(&self) -> anyhow::Result<SocketAddr> {
        let console = free_addr()?;
        self.start_admin_with(Some(console)).await?;
        Ok(console)
    }

    async fn start_admin_with(&self, console_listen: Option<SocketAddr>) -> anyhow::Result<SocketAddr> {
        let config = henvis_admin::AdminConfig {
            service: self.service_config(),
            listen: free_addr()?,
            rules: None,
            audit_public_key: None,
            stats_threshold: henvis_domain::stats::DEFAULT_THRESHOLD,
            console_listen,
        };
        let admin = henvis_admin::build(&config).await?;
        let (listener, addr) = henvis_runtime::bind(config.listen).await?;
        tokio::spawn(henvis_admin::serve(
            admin,
            listener,
            henvis_runtime::Readiness::new(),
            stopped(self.stop.subscribe()),
        ));
        Ok(addr)
    }

    /// A client of the admin service, authenticated as `principal` by its certificate.
    pub async fn admin_client(
        &self,
        principal: &Principal,
    ) -> anyhow::Result<henvis_proto::henvis::admin::v1::admin_service_client::AdminServiceClient<Channel>> {
        let channel = henvis_runtime::tls::connect_as(&self.admin.to_string(), self.pki_dir(), principal).await?;
        Ok(henvis_proto::henvis::admin::v1::admin_service_client::AdminServiceClient::new(channel))
    }

    /// Puts a rule set live the governed way: `admin-1` proposes it, `admin-2` approves it.
    /// Returns the approved proposal.
    pub async fn put_live(
        &self,
        file: &str,
        text: &str,
    ) -> anyhow::Result<henvis_proto::henvis::admin::v1::RuleSetVersion> {
        use henvis_proto::henvis::admin::v1::{ApproveRuleSetRequest, ProposeRuleSetRequest};
        let proposed = self
            .admin_client(&admin("admin-1"))
            .await?
            .propose_rule_set(ProposeRuleSetRequest {
                file: file.to_owned(),
                text: text.to_owned(),
                note: "test".into(),
            })
            .await?
            .into_inner();
        Ok(self
            .admin_client(&admin("admin-2"))
            .await?
            .approve_rule_set(ApproveRuleSetRequest {
                proposal_id: proposed.proposal_id,
            })
            .await?
            .into_inner())
    }

    /// Starts (or starts again) one sector service in-process on a fresh port.
    pub async fn start_sector(&mut self, sector: Sector) -> anyhow::Result<()> {
        let config = henvis_sector::SectorConfig {
            listen: free_addr()?,
            service: self.service_config(),
            max_event_bytes: 64 * 1024,
            ack_wait_secs: self.options.ack_wait_secs,
            inbox_max_attempts: self.options.inbox_max_attempts,
            inbox_window: 8,
            heartbeat_secs: 1,
            alerts: henvis_sector::AlertConfig {
                urgent_deadline_secs: self.options.urgent_alert_deadline_secs,
                normal_deadline_secs: 0,
                escalate_to: "politi-nsk".into(),
                tick_ms: 100,
            },
            console_listen: None,
        };
        let core = henvis_sector::build(sector, &config).await?;
        let (listener, addr) = henvis_runtime::bind(config.listen).await?;
        let (stop, rx) = watch::channel(false);
        let handle = tokio::spawn(henvis_sector::serve(
            core,
            listener,
            henvis_runtime::Readiness::new(),
            stopped(rx),
        ));
        self.services.insert(sector, (stop, handle));
        self.endpoints.insert(sector, addr);
        Ok(())
    }

    /// Stops one sector service (graceful shutdown) and waits until it has stopped.
    pub async fn stop_sector(&mut self, sector: Sector) -> anyhow::Result<()> {
        if let Some((stop, handle)) = self.services.remove(&sector) {
            let _ = stop.send(true);
            handle.await??;
        }
        Ok(())
    }

    /// Replaces the in-process `sector` service with its real binary as a process on a
    /// fixed port (same settings), for tests that kill it.
    pub async fn run_sector_as_process(&mut self, sector: Sector) -> anyhow::Result<SectorProcess> {
        self.run_sector_as_process_with(sector, &[]).await
    }

    /// [`run_sector_as_process`](Self::run_sector_as_process) with `extra` settings.
    pub async fn run_sector_as_process_with(
        &mut self,
        sector: Sector,
        extra: &[(&'static str, String)],
    ) -> anyhow::Result<SectorProcess> {
        self.stop_sector(sector).await?;
        let p = self.start_sector_process(sector, extra)?;
        wait_listening(p.addr).await?;
        Ok(p)
    }

    /// Starts `sector`'s binary as a process on a fresh fixed port with `extra` settings,
    /// without waiting for it (the in-process service must be stopped first).
    pub fn start_sector_process(
        &mut self,
        sector: Sector,
        extra: &[(&'static str, String)],
    ) -> anyhow::Result<SectorProcess> {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let o = &self.options;
        let mut env = vec![
            ("HENVIS_LISTEN", addr.to_string()),
            ("HENVIS_NATS_URL", self.nats.url()),
            ("HENVIS_PKI_DIR", self._creds.path().display().to_string()),
            ("HENVIS_ACK_WAIT_SECS", o.ack_wait_secs.to_string()),
            ("HENVIS_INBOX_MAX_ATTEMPTS", o.inbox_max_attempts.to_string()),
            ("HENVIS_HEARTBEAT_SECS", "1".to_owned()),
            ("HENVIS_DUPLICATE_WINDOW_SECS", o.duplicate_window_secs.to_string()),
            ("HENVIS_RETENTION_SECS", o.retention_secs.to_string()),
            ("HENVIS_STREAM_MAX_BYTES", o.stream_max_bytes.to_string()),
            ("HENVIS_AGENCY_QUOTA", o.agency_quota.to_string()),
            ("HENVIS_RECIPIENT_SHARE", o.recipient_share.to_string()),
            (
                "HENVIS_STREAM_REPLICAS",
                if o.nats_nodes > 1 { "3" } else { "1" }.to_owned(),
            ),
        ];
        env.extend(extra.iter().cloned());
        let child = spawn_service(&format!("henvis-{sector}"), &env)?;
        self.endpoints.insert(sector, addr);
        Ok(SectorProcess {
            child,
            sector,
            env,
            addr,
        })
    }

    /// Starts one more in-process router (any number may run); returns its gRPC address.
    pub async fn start_router(&self) -> anyhow::Result<SocketAddr> {
        let config = henvis_router::RouterConfig {
            service: self.service_config(),
            rules: None,
            listen: free_addr()?,
            expiry_warning_secs: self.options.expiry_warning_secs,
            expiry_scan_secs: 1,
            closed_case_retention_secs: self.options.closed_case_retention_secs,
            retention_scan_secs: self.options.closed_case_retention_secs.clamp(1, 3600),
            audit_signing_key: None,
            in_flight: henvis_router::DEFAULT_IN_FLIGHT,
        };
        let router = henvis_router::build(&config).await?;
        let (listener, addr) = henvis_runtime::bind(config.listen).await?;
        tokio::spawn(henvis_router::serve(
            router,
            listener,
            henvis_runtime::Readiness::new(),
            stopped(self.stop.subscribe()),
        ));
        Ok(addr)
    }

    /// The configuration of one more router on this deployment's NATS (for tests that run
    /// reconciliation or start-up checks themselves), with `replicas` per stream.
    pub fn router_config(&self, replicas: usize) -> henvis_router::RouterConfig {
        henvis_router::RouterConfig {
            service: henvis_runtime::ServiceConfig {
                stream_replicas: replicas,
                ..self.service_config()
            },
            rules: None,
            #[allow(clippy::unwrap_used)] // a constant address
            listen: free_addr().unwrap_or_else(|_| "127.0.0.1:0".parse().unwrap()),
            expiry_warning_secs: 3 * 24 * 3600,
            expiry_scan_secs: 3600,
            closed_case_retention_secs: self.options.closed_case_retention_secs,
            retention_scan_secs: self.options.closed_case_retention_secs.clamp(1, 3600),
            audit_signing_key: None,
            in_flight: henvis_router::DEFAULT_IN_FLIGHT,
        }
    }

    /// The settings every service of this deployment shares.
    pub fn service_config(&self) -> henvis_runtime::ServiceConfig {
        henvis_runtime::ServiceConfig {
            duplicate_window_secs: self.options.duplicate_window_secs,
            retention_secs: self.options.retention_secs,
            stream_max_bytes: self.options.stream_max_bytes,
            stream_replicas: if self.options.nats_nodes > 1 { 3 } else { 1 },
            agency_quota: self.options.agency_quota,
            recipient_share: self.options.recipient_share,
            ..henvis_runtime::ServiceConfig::new(self.nats.url(), self._creds.path())
        }
    }

    /// The PKI folder of the deployment (CA, revocation list, every certificate).
    pub fn pki_dir(&self) -> &Path {
        self._creds.path()
    }

    /// The principal an id stands for: an agency of the directory, else a contact person.
    pub fn principal(&self, id: &str) -> anyhow::Result<Principal> {
        let agency = henvis_domain::AgencyId::parse(id)?;
        if self.directory.agency(&agency).is_some() {
            return Ok(Principal::Agency(agency));
        }
        Ok(Principal::Person(henvis_domain::PersonId::parse(id)?))
    }

    /// A client of `sector`'s common API, authenticated as `id` (an agency or a contact
    /// person) by its certificate.
    pub async fn client(&self, sector: Sector, id: &str) -> anyhow::Result<Client> {
        Ok(Client {
            inner: ReferralServiceClient::new(self.channel_as(sector, id).await?),
        })
    }

    /// A mutual-TLS channel to `sector`'s service as `id` (an agency or a contact person).
    pub async fn channel_as(&self, sector: Sector, id: &str) -> anyhow::Result<Channel> {
        let addr = self.endpoints[&sector].to_string();
        henvis_runtime::tls::connect_as(&addr, self.pki_dir(), &self.principal(id)?).await
    }

    /// A mutual-TLS channel to `sector`'s service as the henvis service `router` (for
    /// health and reflection).
    pub async fn channel(&self, sector: Sector) -> anyhow::Result<Channel> {
        self.service_channel(self.endpoints[&sector]).await
    }

    /// A mutual-TLS channel to `addr` as the henvis service `router`.
    pub async fn service_channel(&self, addr: SocketAddr) -> anyhow::Result<Channel> {
        henvis_runtime::tls::connect_as(&addr.to_string(), self.pki_dir(), &Principal::Service("router".into())).await
    }

    /// A channel to `sector`'s service presenting the given certificate and key (or none),
    /// trusting `ca_pem`; for tests of what is refused.
    pub async fn channel_with(
        &self,
        sector: Sector,
        ca_pem: &[u8],
        identity: Option<(&[u8], &[u8])>,
    ) -> anyhow::Result<Channel> {
        let tls = henvis_runtime::tls::client_tls(ca_pem, identity);
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("https://{}", self.endpoints[&sector]))?.tls_config(tls)?;
        Ok(endpoint.connect().await?)
    }

    /// `payload` as stored in IN, OUT, DEAD or the alert details (sealed with its case's
    /// key), opened as the router would: for checks of what the services stored.
    pub async fn opened(&self, payload: &[u8]) -> anyhow::Result<Vec<u8>> {
        Ok(self.opener().await?.open(payload).await?.plaintext)
    }

    /// `plaintext` sealed with `case`'s key, as a sector service stores it (for tests that
    /// publish as a buggy or compromised service would).
    pub async fn sealed(&self, case: &str, plaintext: &[u8]) -> anyhow::Result<bytes::Bytes> {
        Ok(self.opener().await?.seal(case, plaintext).await?)
    }

    /// A connection as the router with the case master key (opens and seals payloads).
    pub async fn opener(&self) -> anyhow::Result<&henvis_bus::Bus> {
        self.opener
            .get_or_try_init(|| async {
                let config = self.service_config();
                let bus = henvis_bus::Bus::connect(
                    &self.nats.url(),
                    "henvis-test-opener",
                    Some(&henvis_bus::NatsIdentity::of(self.pki_dir(), &inspector())),
                )
                .await?;
                let master = config
                    .case_master_key()?
                    .ok_or_else(|| anyhow::anyhow!("no case master key in the test PKI"))?;
                Ok::<_, anyhow::Error>(bus.with_master_key(master))
            })
            .await
    }

    /// A JetStream context on the deployment's server, for checks behind the services.
    pub async fn jetstream(&self) -> anyhow::Result<async_nats::jetstream::Context> {
        Ok(async_nats::jetstream::new(
            connect_as(&self.nats.url(), self.pki_dir(), &inspector()).await?,
        ))
    }

    /// Number of messages in a stream.
    pub async fn stream_messages(&self, stream: &str) -> anyhow::Result<u64> {
        let mut s = self.jetstream().await?.get_stream(stream).await?;
        Ok(s.info().await?.state.messages)
    }

    /// The subjects of `stream` that hold messages, with their counts.
    pub async fn subjects(&self, stream: &str, filter: &str) -> anyhow::Result<HashMap<String, usize>> {
        use futures::TryStreamExt;
        let s = self.jetstream().await?.get_stream(stream).await?;
        let subjects = s.info_with_subjects(filter).await?;
        Ok(subjects.try_collect().await?)
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for (stop, _) in self.services.values() {
            let _ = stop.send(true);
        }
    }
}

/// An authenticated client of the common API.
pub struct Client {
    /// The generated client.
    pub inner: ReferralServiceClient<Channel>,
}

impl Client {
    /// Wraps `msg` in a request (the identity is the channel's client certificate).
    pub fn req<T>(&self, msg: T) -> Request<T> {
        Request::new(msg)
    }
}

impl Deployment {
    /// Every message of `stream` under `filter`, oldest first, with its stream sequence.
    pub async fn read_all(&self, stream: &str, filter: &str) -> anyhow::Result<Vec<(u64, bytes::Bytes)>> {
        use async_nats::jetstream::consumer::{DeliverPolicy, pull};
        use futures::StreamExt;
        let s = self.jetstream().await?.get_stream(stream).await?;
        let mut consumer = s
            .create_consumer(pull::OrderedConfig {
                filter_subject: filter.to_owned(),
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await?;
        let pending = consumer.info().await?.num_pending;
        let mut out = Vec::new();
        if pending == 0 {
            return Ok(out);
        }
        let mut messages = consumer.messages().await?;
        while let Some(m) = messages.next().await {
            let m = m?;
            let info = m.info().map_err(|e| anyhow::anyhow!("{e}"))?;
            let (seq, left) = (info.stream_sequence, info.pending);
            out.push((seq, m.payload.clone()));
            if left == 0 {
                break;
            }
        }
        Ok(out)
    }

    /// The audit records of one case, oldest first, as JSON.
    pub async fn audit(&self, case_id: &str) -> anyhow::Result<Vec<(u64, serde_json::Value)>> {
        let records = self.read_all("AUDIT", &format!("henvis.audit.*.{case_id}.*")).await?;
        records
            .into_iter()
            .map(|(seq, b)| Ok((seq, serde_json::from_slice(&b)?)))
            .collect()
    }
}
