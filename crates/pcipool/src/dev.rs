//! `pcipool dev`: the controller's service with a SQLite store and the simulated lab in one process,
//! serving the HTTP API and the lab's data path; and the in-process lab the validation suites serve.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use pcipool_agent::LocalShared;
use pcipool_api::{Principal, Role};
use pcipool_controller::{Clock as _, Controller, Hardware, Service, SystemClock};
use pcipool_pool::policy::Policy;
use pcipool_sim::{FabricDesc, Sim};
use pcipool_store::SqliteStore;

/// The controller's service over the simulated lab `desc` in this process, with its store in `data_dir`:
/// every qualified device registered, unfinished workflows resumed, leases the restarted lab no longer
/// carries fenced.
///
/// # Errors
/// Store or description errors.
pub fn open_lab(
    data_dir: &Path,
    desc: &FabricDesc,
    policy: Policy,
) -> anyhow::Result<Service<SqliteStore>> {
    let store = SqliteStore::open(&data_dir.join("pool.db")).context("opening the store")?;
    let sim = Sim::new(desc, 1).map_err(|e| crate::BadInput(e.to_string()))?;
    let controller = Controller::new(store, policy, desc.topology.clone());
    let clock = SystemClock;
    for (info, reasons) in pcipool_sim_lab::qualified_devices(&sim, None) {
        controller
            .register(info, reasons, clock.now_ms())
            .context("registering devices")?;
    }
    let hardware = Hardware::InProcess(Box::new(LocalShared::new(sim)));
    Service::start(controller, hardware, Arc::new(clock)).context("starting the controller")
}

/// Serves `service` on `listen` until SIGINT or SIGTERM. `banner` runs once the address is bound.
///
/// # Errors
/// Bind or serve failures.
pub fn serve_lab(
    service: Service<SqliteStore>,
    listen: &str,
    tokens: BTreeMap<String, Principal>,
    banner: impl FnOnce(std::net::SocketAddr),
) -> anyhow::Result<()> {
    serve_lab_with(
        service,
        listen,
        tokens,
        |_| axum::Router::new(),
        banner,
        shutdown_signal(),
    )
}

/// As [`serve_lab`], with more routes on the same listener, made once its address is known.
///
/// # Errors
/// Bind failures.
pub fn serve_lab_with(
    service: Service<SqliteStore>,
    listen: &str,
    tokens: BTreeMap<String, Principal>,
    extra: impl FnOnce(std::net::SocketAddr) -> axum::Router,
    banner: impl FnOnce(std::net::SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting tokio")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        let addr = listener.local_addr().context("local address")?;
        let routes = extra(addr);
        banner(addr);
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        pcipool_api::serve_service(Arc::new(service), listener, tokens, routes, shutdown)
            .await
            .context("serving the API")
    })
}

/// The one token of a lab: an admin.
fn admin_only(token: &str) -> BTreeMap<String, Principal> {
    let mut tokens = BTreeMap::new();
    tokens.insert(
        token.to_owned(),
        Principal {
            name: "admin".into(),
            role: Role::Admin,
        },
    );
    tokens
}

/// The data path of a lab's NVMe devices, served on the lab's own address (the fabric URL for
/// pcipool-access is the controller's). Its files live in `DIR/datapath`, so a killed lab leaves nothing
/// behind elsewhere and the drives' contents outlive a restart; it reconciles with the admin token in
/// `DIR/admin.token`.
struct DatapathRoutes<F> {
    devices: usize,
    router: F,
}

fn datapath_routes(
    desc: &pcipool_sim::FabricDesc,
    dir: &Path,
) -> anyhow::Result<DatapathRoutes<impl FnOnce(std::net::SocketAddr) -> axum::Router + use<>>> {
    let datapath = pcipool_sim_server::serve_datapath(desc, &dir.join("datapath"))
        .context("serving the lab's data path")?;
    let token_path = dir.join("admin.token");
    Ok(DatapathRoutes {
        devices: datapath.devices(),
        router: move |addr: std::net::SocketAddr| {
            let state = datapath.with_controller(format!("http://{addr}"));
            state.reconcile_with(token_path);
            pcipool_sim_server::datapath::router(state)
        },
    })
}

/// A lab like `pcipool dev`'s (controller, store, data path on one loopback address) served from a
/// thread of this process until dropped: what `pcipool validate` runs the data-path suite against when
/// it validates the embedded lab.
pub struct LabServer {
    /// The controller's (and the data path's) URL.
    pub url: String,
    /// The admin token.
    pub token: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl LabServer {
    /// Starts it with its store and data path under `dir`.
    ///
    /// # Errors
    /// Store, description or bind failures.
    pub fn start(desc: &pcipool_sim::FabricDesc, dir: &Path) -> anyhow::Result<Self> {
        let lab = open_lab(dir, desc, Policy::default())?;
        let token = crate::server::token_file(dir, "admin.token")?;
        let tokens = admin_only(&token);
        let routes = datapath_routes(desc, dir)?;
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            serve_lab_with(
                lab,
                "127.0.0.1:0",
                tokens,
                routes.router,
                move |addr| {
                    let _ = addr_tx.send(addr);
                },
                async move {
                    let _ = stopped.await;
                },
            )
        });
        let addr = match addr_rx.recv_timeout(std::time::Duration::from_secs(30)) {
            Ok(a) => a,
            Err(_) => {
                let why = thread
                    .join()
                    .map_err(|_| anyhow::anyhow!("the lab server panicked"))
                    .and_then(|r| r.map(|()| anyhow::anyhow!("the lab server stopped")));
                return Err(why.unwrap_or_else(|e| e));
            }
        };
        Ok(Self {
            url: format!("http://{addr}"),
            token,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for LabServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// A fresh random secret (24 bytes from the kernel, hex).
///
/// # Errors
/// /dev/urandom unreadable.
pub fn random_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom for the admin token")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// `pcipool dev`.
///
/// # Errors
/// Store, bind or description errors.
pub fn run(
    data_dir: Option<PathBuf>,
    listen: &str,
    fabric: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let dir = data_dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("pcipool-dev-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (_, desc) = crate::sim_cmd::load_or(fabric, "built-in lab-4", crate::sim_cmd::LAB_4)?;
    let lab = open_lab(&dir, &desc, Policy::default())?;
    let token_path = dir.join("admin.token");
    let token = crate::server::token_file(&dir, "admin.token")?;
    let tokens = admin_only(&token);
    let routes = datapath_routes(&desc, &dir)?;
    let served = routes.devices;
    let result = serve_lab_with(
        lab,
        listen,
        tokens,
        routes.router,
        |addr| {
            println!("pcipool dev: the 4-host simulated lab is served at http://{addr}");
            println!(
                "  data path:   {served} NVMe device(s) for shared access (pcipool-access: fabric = controller = this address)"
            );
            println!("  store:       {}", dir.join("pool.db").display());
            println!(
                "  admin token: {token}   (also in {})",
                token_path.display()
            );
            println!("Try, in another shell:");
            println!("  export PCIPOOL_URL=http://{addr} PCIPOOL_TOKEN={token}");
            println!("  pcipool borrow --class nvme --host n3");
            println!("  pcipool lease list");
            println!("  pcipool audit verify");
        },
        shutdown_signal(),
    );
    result?;
    Ok(ExitCode::SUCCESS)
}
