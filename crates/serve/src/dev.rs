//! The embedded lab: the controller's service over the simulated fabric in this process, with a SQLite
//! store, one admin token and the data path of the lab's NVMe devices, all on one loopback address.
//! `pcipool dev` serves it until a signal; [`DevServer`] serves it from a thread until dropped (the
//! validation suites' data-path lab).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pcipool_agent::LocalShared;
use pcipool_controller::{Clock as _, Controller, Hardware, Service, SystemClock};
use pcipool_pool::policy::Policy;
use pcipool_sim::{FabricDesc, Sim};
use pcipool_store::SqliteStore;

use crate::ServeError;
use crate::tokens::{admin_only, token_file};

/// The controller's service over the simulated lab `desc` in this process, with its store in
/// `data_dir/pool.db`: every qualified device registered, unfinished workflows resumed, leases the
/// restarted lab no longer carries fenced.
///
/// # Errors
/// Store or description errors.
pub fn open_service(
    data_dir: &Path,
    desc: &FabricDesc,
    policy: Policy,
) -> Result<Service<SqliteStore>, ServeError> {
    let store = SqliteStore::open(&data_dir.join("pool.db"))?;
    open_service_on(store, desc, policy)
}

/// As [`open_service`], on any store (the API benchmark compares SQLite with etcd).
///
/// # Errors
/// Store or description errors.
pub fn open_service_on<S: pcipool_store::Store>(
    store: S,
    desc: &FabricDesc,
    policy: Policy,
) -> Result<Service<S>, ServeError> {
    let sim = Sim::new(desc, 1).map_err(|e| ServeError::BadInput(e.to_string()))?;
    let controller = Controller::new(store, policy, desc.topology.clone());
    let clock = SystemClock;
    for (info, reasons) in pcipool_sim_lab::qualified_devices(&sim, None) {
        controller.register(info, reasons, clock.now_ms())?;
    }
    let hardware = Hardware::InProcess(Box::new(LocalShared::new(sim)));
    Ok(Service::start(controller, hardware, Arc::new(clock))?)
}

/// Where an embedded lab's things are, for the operator.
#[derive(Debug, Clone)]
pub struct DevInfo {
    /// The admin token.
    pub token: String,
    /// The file holding it (`DIR/admin.token`).
    pub token_path: PathBuf,
    /// The SQLite store (`DIR/pool.db`).
    pub store_path: PathBuf,
    /// NVMe devices whose data path is served.
    pub datapath_devices: usize,
}

impl DevInfo {
    /// What `pcipool dev` prints once it serves at `addr`: where everything is, and what to try.
    #[must_use]
    pub fn banner(&self, addr: SocketAddr, fabric: &str, hosts: usize) -> Vec<String> {
        let token = &self.token;
        vec![
            format!(
                "pcipool dev: the {hosts}-host simulated lab ({fabric}) is served at http://{addr}"
            ),
            format!(
                "  data path:   {} NVMe device(s) for shared access (pcipool-access: fabric = controller = this address)",
                self.datapath_devices
            ),
            format!("  dashboard:   http://{addr}/ui (sign in with the admin token)"),
            format!("  store:       {}", self.store_path.display()),
            format!(
                "  admin token: {token}   (also in {})",
                self.token_path.display()
            ),
            "Try, in another shell:".into(),
            format!("  export PCIPOOL_URL=http://{addr} PCIPOOL_TOKEN={token}"),
            "  pcipool borrow --class nvme --host n3".into(),
            "  pcipool lease list".into(),
            "  pcipool audit verify".into(),
        ]
    }
}

/// An embedded lab ready to serve: its service, its data path, and where its things are.
pub struct DevPool {
    service: Service<SqliteStore>,
    datapath: Option<pcipool_sim_server::DataPathState>,
    /// Where its things are.
    pub info: DevInfo,
}

impl DevPool {
    /// Opens the lab `desc` with its store, token and data-path files under `dir` (created if
    /// missing). The data path lives in `DIR/datapath`, so a killed lab leaves nothing elsewhere and the
    /// drives' contents outlive a restart. Without `data_path` the pool is served without it: the
    /// simulated data path runs a thread per NVMe drive, which a 1,024-host fabric's 8,192 drives
    /// cannot afford.
    ///
    /// # Errors
    /// Store, description or file errors.
    pub fn open(desc: &FabricDesc, dir: &Path, data_path: bool) -> Result<Self, ServeError> {
        std::fs::create_dir_all(dir)
            .map_err(ServeError::io(format!("creating {}", dir.display())))?;
        let service = open_service(dir, desc, Policy::default())?;
        let token = token_file(dir, "admin.token")?;
        let datapath = data_path
            .then(|| pcipool_sim_server::serve_datapath(desc, &dir.join("datapath")))
            .transpose()
            .map_err(|e| match e {
                pcipool_sim_server::SimServerError::Description(d) => ServeError::BadInput(d),
                other => ServeError::BadInput(format!("the lab's data path: {other}")),
            })?;
        let info = DevInfo {
            token,
            token_path: dir.join("admin.token"),
            store_path: dir.join("pool.db"),
            datapath_devices: datapath.as_ref().map_or(0, |d| d.devices()),
        };
        Ok(Self {
            service,
            datapath,
            info,
        })
    }

    /// Serves the API and the data path on `listen` until `shutdown`; `banner` runs once bound. The
    /// data path checks leases with this controller (the fabric URL for `pcipool-access` is the
    /// controller's own) and reconciles with the admin token.
    ///
    /// # Errors
    /// Bind or serve failures.
    pub fn serve(
        self,
        listen: &str,
        banner: impl FnOnce(&DevInfo, SocketAddr),
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let Self {
            service,
            datapath,
            info,
        } = self;
        let token_path = info.token_path.clone();
        crate::serve(
            service,
            listen,
            admin_only(&info.token),
            move |addr| match datapath {
                Some(datapath) => {
                    let state = datapath.with_controller(format!("http://{addr}"));
                    state.reconcile_with(token_path);
                    pcipool_api::Beside {
                        routes: pcipool_sim_server::datapath::router(state),
                        contract: pcipool_sim_server::datapath::contract(),
                    }
                }
                None => pcipool_api::Beside::nothing(),
            },
            move |addr| banner(&info, addr),
            shutdown,
        )
    }
}

/// An embedded lab served from a thread of this process until dropped: what `pcipool validate` runs the
/// data-path suite against when it validates the embedded lab.
pub struct DevServer {
    /// The controller's (and the data path's) URL.
    pub url: String,
    /// The admin token.
    pub token: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), ServeError>>>,
}

impl DevServer {
    /// Starts it on a free loopback port with its files under `dir`.
    ///
    /// # Errors
    /// Store, description or bind failures.
    pub fn start(desc: &FabricDesc, dir: &Path) -> Result<Self, ServeError> {
        let pool = DevPool::open(desc, dir, true)?;
        let token = pool.info.token.clone();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            pool.serve(
                "127.0.0.1:0",
                move |_, addr| {
                    // The receiver waits for this address; if it gave up, there is no one to tell.
                    let _gone = addr_tx.send(addr);
                },
                async move {
                    // A dropped sender means the same as a sent stop.
                    let _either = stopped.await;
                },
            )
        });
        let Ok(addr) = addr_rx.recv_timeout(std::time::Duration::from_secs(30)) else {
            return Err(match thread.join() {
                Ok(Err(e)) => e,
                Ok(Ok(())) => {
                    ServeError::BadInput("the lab server stopped before it served".into())
                }
                Err(_) => ServeError::BadInput("the lab server panicked".into()),
            });
        };
        Ok(Self {
            url: format!("http://{addr}"),
            token,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            // The server may have stopped on its own; then there is nothing to stop.
            let _already_stopped = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "the embedded lab server failed"),
                Err(_) => tracing::warn!("the embedded lab server panicked"),
            }
        }
    }
}
