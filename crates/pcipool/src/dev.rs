//! `pcipool dev`: the controller with a SQLite store, the simulated lab and its agents in one process,
//! serving the HTTP API; and the CLI client commands that talk to it.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use pcipool_api::{PoolApi, Principal, Role};
use pcipool_controller::{Assigned, ControlError, Controller, Granted};
use pcipool_fabric::{Fdid, LeaseId, NodeId};
use pcipool_pool::AuditChain;
use pcipool_pool::policy::Policy;
use pcipool_pool::schedule::{DeviceInfo, Request};
use pcipool_pool::workflow::Journal;
use pcipool_qualify::AccessModel;
use pcipool_sim::{FabricDesc, Sim};
use pcipool_store::{SqliteStore, Store};
use pcipool_wire::{
    AgentHeartbeat, AgentRegistration, AuditVerify, AuditView, BorrowRequest, DeviceAction,
    DeviceDetail, DeviceView, HeartbeatReply, LeaseView, RegistrationReply,
};

use crate::fleet::{AgentFleet, AgentRecord, Hardware, Liveness};

/// Milliseconds since the Unix epoch: lease expiries survive a controller restart.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One assignment's lends: each lease with its journal (None for a shared lease).
type Lends = Vec<(Granted, Option<Journal>)>;

/// The controller and the hardware it drives.
pub struct Lab {
    controller: Controller<SqliteStore>,
    hardware: Hardware,
    /// Assigned lends a request did not wait for (`wait: false`), for the background worker.
    lends: std::sync::Mutex<std::collections::VecDeque<Lends>>,
    lend_ready: std::sync::Condvar,
}

impl Lab {
    /// Opens the store, builds the simulated lab, registers its devices, resumes unfinished workflows.
    ///
    /// # Errors
    /// Store or description errors.
    pub fn open(data_dir: &Path, desc: &FabricDesc, policy: Policy) -> anyhow::Result<Self> {
        let store = SqliteStore::open(&data_dir.join("pool.db")).context("opening the store")?;
        let sim = Sim::new(desc, 1).map_err(|e| anyhow::anyhow!("{e}"))?;
        let controller = Controller::new(store, policy, desc.topology.clone());
        let now = now_ms();
        for (info, reasons) in pcipool_lab::qualified_devices(&sim, None) {
            controller
                .register(info, reasons, now)
                .context("registering devices")?;
        }
        let hardware = Hardware::InProcess(Box::new(std::sync::Mutex::new(sim)));
        controller
            .resume(&mut hardware.steps(), now)
            .context("resuming unfinished workflows")?;
        // The simulated hardware lives in this process, so a restart is a power cycle of the lab: fence
        // every lease the fabric no longer carries.
        controller
            .reconcile(&mut hardware.steps(), now)
            .context("reconciling leases with the hardware")?;
        Ok(Self {
            controller,
            hardware,
            lends: std::sync::Mutex::new(std::collections::VecDeque::new()),
            lend_ready: std::sync::Condvar::new(),
        })
    }

    /// Opens the store for a controller whose hardware is reached through agents (`pcipool server`),
    /// and resumes unfinished workflows through the agents recorded in the store. Unlike the in-process
    /// lab there is no reconcile pass: the hosts keep their mappings while the controller is down, and a
    /// borrower that vanished stops heartbeating, so its leases expire and are fenced.
    ///
    /// # Errors
    /// Store errors, unreadable agent records.
    pub fn with_agents(
        data_dir: &Path,
        topology: pcipool_fabric::Topology,
        policy: Policy,
        fabric_url: Option<String>,
        agent_timeout: std::time::Duration,
    ) -> anyhow::Result<Self> {
        let store = SqliteStore::open(&data_dir.join("pool.db")).context("opening the store")?;
        let mut records = Vec::new();
        for (node, body) in store.agents().context("reading agent records")? {
            let record: AgentRecord = serde_json::from_str(&body).map_err(|e| {
                crate::BadInput(format!("agent record of {node} in the store: {e}"))
            })?;
            records.push((node, record));
        }
        let controller = Controller::new(store, policy, topology);
        let hardware = Hardware::Agents(AgentFleet::new(records, fabric_url, agent_timeout));
        controller
            .resume(&mut hardware.steps(), now_ms())
            .context("resuming unfinished workflows")?;
        Ok(Self {
            controller,
            hardware,
            lends: std::sync::Mutex::new(std::collections::VecDeque::new()),
            lend_ready: std::sync::Condvar::new(),
        })
    }

    /// Runs the lends requests did not wait for, one assignment at a time, for as long as the process
    /// lives. A lend queued here is already durable (assigned with its journal): if the process dies
    /// first, the next start resumes it.
    pub fn start_lend_worker(self: &Arc<Self>) {
        let lab = self.clone();
        std::thread::spawn(move || {
            loop {
                let job = {
                    let mut queue = lab
                        .lends
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    loop {
                        if let Some(job) = queue.pop_front() {
                            break job;
                        }
                        queue = lab
                            .lend_ready
                            .wait(queue)
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                    }
                };
                if let Err(e) =
                    lab.controller
                        .complete_lends(&mut lab.hardware.steps(), job, now_ms())
                {
                    eprintln!("pcipool: background lend: {e}");
                }
            }
        });
    }

    /// The store's (durable commits, WAL flushes).
    pub fn commit_stats(&self) -> (u64, u64) {
        self.controller.store().commit_stats()
    }

    /// Marks silent agents lost and expires due leases.
    pub fn tick(&self) {
        let now = now_ms();
        if let Hardware::Agents(fleet) = &self.hardware {
            for node in fleet.newly_lost() {
                eprintln!("pcipool: the agent of {node} stopped answering; its devices are lost");
                if let Err(e) = self
                    .controller
                    .lender_lost(&mut self.hardware.steps(), node, now)
                {
                    eprintln!("pcipool: marking the devices of {node} lost: {e}");
                }
            }
        }
        if let Err(e) = self.controller.tick(&mut self.hardware.steps(), now) {
            eprintln!("pcipool: expiring leases: {e}");
        }
    }
}

impl PoolApi for Lab {
    fn borrow(
        &self,
        actor: &str,
        tenant: &str,
        r: BorrowRequest,
    ) -> Result<Vec<Granted>, ControlError> {
        let request = Request {
            selector: r.selector,
            count: r.count,
            model: r.model,
            borrower: r.borrower,
            max_sharers: r.max_sharers,
            request_id: r.request_id,
        };
        let now = now_ms();
        match self.controller.assign(
            &mut self.hardware.steps(),
            actor,
            tenant,
            request,
            r.duration_secs,
            now,
        )? {
            Assigned::Replayed(granted) => Ok(granted),
            Assigned::New(lends) if r.wait => {
                self.controller
                    .complete_lends(&mut self.hardware.steps(), lends, now)
            }
            Assigned::New(lends) => {
                let granted = lends.iter().map(|(g, _)| g.clone()).collect();
                self.lends
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push_back(lends);
                self.lend_ready.notify_one();
                Ok(granted)
            }
        }
    }

    fn release(
        &self,
        actor: &str,
        tenant: Option<&str>,
        lease: LeaseId,
    ) -> Result<(), ControlError> {
        self.controller
            .release(&mut self.hardware.steps(), actor, tenant, lease, now_ms())
    }

    fn downgrade(
        &self,
        actor: &str,
        tenant: Option<&str>,
        lease: LeaseId,
        max_sharers: u32,
    ) -> Result<(), ControlError> {
        self.controller.downgrade(
            &mut self.hardware.steps(),
            actor,
            tenant,
            lease,
            max_sharers,
            now_ms(),
        )
    }

    fn renew(
        &self,
        actor: &str,
        tenant: Option<&str>,
        lease: LeaseId,
        epoch: u64,
    ) -> Result<(), ControlError> {
        self.controller.renew(
            &mut self.hardware.steps(),
            actor,
            tenant,
            lease,
            pcipool_pool::Epoch(epoch),
            now_ms(),
        )
    }

    fn record(
        &self,
        actor: &str,
        target: &str,
        action: &str,
        result: &str,
    ) -> Result<(), ControlError> {
        self.controller
            .record(actor, target, action, result, now_ms())
    }

    fn leases(&self) -> Result<Vec<LeaseView>, ControlError> {
        Ok(self
            .controller
            .leases()?
            .into_iter()
            .map(|(fdid, l, state)| LeaseView {
                lease_id: l.id,
                fdid,
                borrower: l.borrower,
                tenant: l.tenant,
                model: l.model,
                epoch: l.epoch.0,
                expires_at: l.expires_at,
                state: state.to_owned(),
            })
            .collect())
    }

    fn devices(&self) -> Result<Vec<DeviceView>, ControlError> {
        Ok(self
            .controller
            .store()
            .devices()?
            .into_iter()
            .map(|d| DeviceView {
                fdid: d.value.info.fdid,
                name: d.value.info.name.clone(),
                class: d.value.info.class,
                state: d.value.state.name().to_owned(),
                leases: d.value.state.leases().iter().map(|l| l.id).collect(),
            })
            .collect())
    }

    fn audit(&self, from: u64, limit: usize) -> Result<Vec<AuditView>, ControlError> {
        Ok(self
            .controller
            .store()
            .audit_records(from, limit)?
            .into_iter()
            .map(|r| AuditView {
                seq: r.seq,
                at: r.at,
                actor: r.actor,
                target: r.target,
                action: r.action,
                result: r.result,
            })
            .collect())
    }

    fn hosts(&self) -> Result<Vec<pcipool_wire::HostView>, ControlError> {
        let devices = self.controller.store().devices()?;
        Ok(self
            .controller
            .topology()
            .hosts()
            .map(|h| pcipool_wire::HostView {
                node: h.node,
                name: h.name.clone(),
                adapters: h.adapters.iter().map(|a| a.name.clone()).collect(),
                devices: devices
                    .iter()
                    .filter(|d| d.value.info.fdid.node == h.node)
                    .count(),
                agent: match &self.hardware {
                    Hardware::InProcess(_) => "in-process".to_owned(),
                    Hardware::Agents(fleet) => fleet.status(h.node).to_owned(),
                },
            })
            .collect())
    }

    fn device_action(
        &self,
        actor: &str,
        fdid: Fdid,
        action: DeviceAction,
    ) -> Result<String, ControlError> {
        let event = match action {
            DeviceAction::Drain => pcipool_pool::Event::Drain { to_local: false },
            DeviceAction::DrainLocal => pcipool_pool::Event::Drain { to_local: true },
            DeviceAction::Undrain => pcipool_pool::Event::Undrain,
            DeviceAction::ClearQuarantine => pcipool_pool::Event::ClearQuarantine,
        };
        self.controller
            .operate(&mut self.hardware.steps(), fdid, &event, actor, now_ms())
            .map(str::to_owned)
    }

    fn workflow(&self, id: u64) -> Result<Option<serde_json::Value>, ControlError> {
        Ok(self
            .controller
            .journal(id)?
            .and_then(|j| serde_json::to_value(j).ok()))
    }

    fn device(&self, fdid: Fdid) -> Result<DeviceDetail, ControlError> {
        let row = self
            .controller
            .store()
            .device(fdid)?
            .ok_or(ControlError::NoDevice(fdid))?;
        let leases = row
            .value
            .state
            .leases()
            .into_iter()
            .map(|l| LeaseView {
                lease_id: l.id,
                fdid,
                borrower: l.borrower,
                tenant: l.tenant.clone(),
                model: l.model,
                epoch: l.epoch.0,
                expires_at: l.expires_at,
                state: row.value.state.name().to_owned(),
            })
            .collect();
        Ok(DeviceDetail {
            state: row.value.state.name().to_owned(),
            detail: serde_json::to_value(&row.value.state).unwrap_or_default(),
            info: row.value.info,
            version: row.version,
            leases,
        })
    }

    fn register_agent(
        &self,
        actor: &str,
        registration: AgentRegistration,
    ) -> Result<RegistrationReply, ControlError> {
        let Hardware::Agents(fleet) = &self.hardware else {
            return Err(ControlError::Unsupported(
                "pcipool dev runs its agents in process; agents register with pcipool server"
                    .into(),
            ));
        };
        let node = registration.node;
        if self.controller.topology().host(node).is_none() {
            return Err(ControlError::NoHost(node));
        }
        if let Some(d) = registration
            .devices
            .iter()
            .find(|d| d.info.fdid.node != node)
        {
            return Err(ControlError::BadReport(format!(
                "the agent of {node} reported {}, a device of another host",
                d.info.fdid
            )));
        }
        let record = AgentRecord {
            url: registration.url,
            secret: registration.secret,
        };
        let now = now_ms();
        let body = serde_json::to_string(&record).unwrap_or_default();
        let target = node.to_string();
        let after = format!("{} with {} devices", record.url, registration.devices.len());
        self.controller.store().put_agent(
            node,
            &body,
            &[pcipool_pool::AuditEntry {
                at: now,
                actor,
                target: &target,
                action: "agent_register",
                before: "",
                after: &after,
                result: "ok",
            }],
        )?;
        let was_lost = fleet.register(node, record);
        for d in registration.devices {
            self.controller.register(d.info, d.reasons, now)?;
        }
        if was_lost {
            self.controller
                .lender_back(&mut self.hardware.steps(), node, now)?;
        }
        Ok(RegistrationReply {
            borrowed: self.controller.borrowed_by(node)?,
        })
    }

    fn agent_heartbeat(
        &self,
        node: NodeId,
        beat: AgentHeartbeat,
    ) -> Result<HeartbeatReply, ControlError> {
        let Hardware::Agents(fleet) = &self.hardware else {
            return Err(ControlError::Unsupported(
                "pcipool dev runs its agents in process".into(),
            ));
        };
        let now = now_ms();
        match fleet.heard(node) {
            Liveness::Unknown => {
                return Ok(HeartbeatReply {
                    register: true,
                    ..HeartbeatReply::default()
                });
            }
            Liveness::Back => {
                self.controller
                    .lender_back(&mut self.hardware.steps(), node, now)?;
            }
            Liveness::Alive => {}
        }
        let beats: Vec<(LeaseId, pcipool_pool::Epoch)> =
            beat.leases.iter().map(|b| (b.lease_id, b.epoch)).collect();
        let (renewed, refused) =
            self.controller
                .borrower_heartbeat(&mut self.hardware.steps(), node, &beats, now)?;
        Ok(HeartbeatReply {
            renewed,
            refused,
            register: false,
        })
    }

    fn audit_verify(&self) -> Result<AuditVerify, ControlError> {
        let records = self.controller.store().all_audit()?;
        Ok(match AuditChain::verify(&records) {
            Ok(n) => AuditVerify {
                records: n,
                ok: true,
                error: None,
            },
            Err(e) => AuditVerify {
                records: records.len() as u64,
                ok: false,
                error: Some(e.to_string()),
            },
        })
    }
}

/// Serves `lab` on `listen` until SIGINT or SIGTERM, with a ticker that expires leases and notices
/// silent agents once a second. `banner` runs once the address is bound.
///
/// # Errors
/// Bind or serve failures.
pub fn serve_lab(
    lab: Lab,
    listen: &str,
    tokens: BTreeMap<String, Principal>,
    banner: impl FnOnce(std::net::SocketAddr),
) -> anyhow::Result<()> {
    serve_lab_with(
        lab,
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
    lab: Lab,
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
        let pool = Arc::new(lab);
        pool.start_lend_worker();
        let ticker = pool.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                every.tick().await;
                let t = ticker.clone();
                let _ = tokio::task::spawn_blocking(move || t.tick()).await;
            }
        });
        let app = pcipool_api::server::router(pool, tokens).merge(extra(addr));
        banner(addr);
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .context("serving the API")?;
        Ok::<_, anyhow::Error>(())
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
    let datapath = crate::sim_serve::serve_datapath(desc, &dir.join("datapath"))?;
    let token_path = dir.join("admin.token");
    Ok(DatapathRoutes {
        devices: datapath.devices(),
        router: move |addr: std::net::SocketAddr| {
            let state = datapath.with_controller(format!("http://{addr}"));
            state.reconcile_with(token_path);
            crate::datapath_serve::router(state)
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
        let lab = Lab::open(dir, desc, Policy::default())?;
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
    let lab = Lab::open(&dir, &desc, Policy::default())?;
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

/// `pcipool bench api`: durable borrow+release cycles per second through the HTTP API, measured end to
/// end with real clients on loopback against a real SQLite file.
///
/// # Errors
/// Setup failures.
pub fn bench(fabric: Option<&Path>, clients: usize, cycles: usize) -> anyhow::Result<ExitCode> {
    let dir = std::env::temp_dir().join(format!("pcipool-bench-api-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (_, desc) = crate::sim_cmd::load_or(fabric, "built-in rack-64", crate::sim_cmd::RACK_64)?;
    let borrowers: Vec<u32> = desc
        .hosts
        .iter()
        .filter(|h| h.devices.is_empty())
        .map(|h| h.node.0)
        .collect();
    let lab = Lab::open(&dir, &desc, Policy::default())?;
    let token = random_token()?;
    let mut tokens = BTreeMap::new();
    tokens.insert(
        token.clone(),
        Principal {
            name: "bench".into(),
            role: Role::Admin,
        },
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting tokio")?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .context("binding")?;
    let addr = listener.local_addr().context("address")?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let lab = Arc::new(lab);
    lab.start_lend_worker();
    let stats = lab.clone();
    let (commits_before, flushes_before) = stats.commit_stats();
    let server = runtime.spawn(pcipool_api::serve(listener, lab, tokens, async {
        let _ = stop_rx.await;
    }));
    let url = format!("http://{addr}");
    let per_client = cycles.div_ceil(clients.max(1));
    let started = std::time::Instant::now();
    let workers: Vec<_> = (0..clients.max(1))
        .map(|c| {
            let (url, token) = (url.clone(), token.clone());
            let borrower = borrowers
                .get(c % borrowers.len().max(1))
                .copied()
                .unwrap_or(1);
            std::thread::spawn(move || {
                let client = pcipool_client::Client::new(&url, &token);
                let mut borrow_ms = Vec::with_capacity(per_client);
                let mut done = 0usize;
                let mut failed: BTreeMap<String, usize> = BTreeMap::new();
                let code = |e: &pcipool_client::ClientError| match e {
                    pcipool_client::ClientError::Api { code, .. } => code.clone(),
                    other => other.to_string(),
                };
                for _ in 0..per_client {
                    let request = BorrowRequest {
                        selector: pcipool_pool::schedule::Selector {
                            class: Some(pcipool_pool::schedule::DeviceClass::Nvme),
                            ..Default::default()
                        },
                        count: 1,
                        model: AccessModel::Lend,
                        borrower: pcipool_fabric::NodeId(borrower),
                        duration_secs: None,
                        max_sharers: None,
                        request_id: None,
                        wait: true,
                    };
                    let t = std::time::Instant::now();
                    match client.borrow(&request) {
                        Ok(g) => {
                            borrow_ms.push(t.elapsed().as_secs_f64() * 1e3);
                            for l in g {
                                match client.release(l.lease_id.0) {
                                    Ok(()) => done += 1,
                                    Err(e) => *failed.entry(code(&e)).or_default() += 1,
                                }
                            }
                        }
                        Err(e) => *failed.entry(code(&e)).or_default() += 1,
                    }
                }
                (borrow_ms, done, failed)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut done = 0;
    let mut refusals: BTreeMap<String, usize> = BTreeMap::new();
    for w in workers {
        if let Ok((l, d, f)) = w.join() {
            latencies.extend(l);
            done += d;
            for (code, n) in f {
                *refusals.entry(code).or_default() += n;
            }
        }
    }
    let failed: usize = refusals.values().sum();
    let elapsed = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(());
    let _ = runtime.block_on(server);
    latencies.sort_by(f64::total_cmp);
    // Nearest-rank percentile over the sorted latencies; `per_mille` avoids float-to-index casts.
    let pct = |per_mille: usize| {
        let n = latencies.len();
        latencies
            .get((n * per_mille / 1000).min(n.saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    println!(
        "api benchmark: {clients} clients, {done} durable borrow+release cycles ({failed} refused) in {elapsed:.2} s"
    );
    println!(
        "  {:.0} cycles/s   (target >= 1,000/s)",
        done as f64 / elapsed.max(1e-9)
    );
    println!(
        "  borrow latency p50 {:.2} ms, p99 {:.2} ms",
        pct(500),
        pct(990)
    );
    if !refusals.is_empty() {
        let list: Vec<String> = refusals.iter().map(|(c, n)| format!("{n} {c}")).collect();
        println!("  refused: {}", list.join(", "));
    }
    let (commits, flushes) = stats.commit_stats();
    let (commits, flushes) = (commits - commits_before, flushes - flushes_before);
    println!(
        "  {commits} durable commits served by {flushes} disk flushes ({:.2} commits per flush, {:.1} flushes per cycle)",
        commits as f64 / flushes.max(1) as f64,
        flushes as f64 / done.max(1) as f64
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ExitCode::SUCCESS)
}

/// `pcipool bench restart`: a store holding `leases` active leases and `audit` audit records is opened the
/// way a restarting controller opens it (migrations, device table, unfinished workflows, audit tail) and
/// the API is ready to serve; prints the time.
///
/// # Errors
/// Setup failures.
pub fn bench_restart(leases: u64, audit: u64) -> anyhow::Result<ExitCode> {
    use pcipool_pool::schedule::DeviceClass;
    use pcipool_pool::{DeviceState, Epoch, Lease};
    use pcipool_store::DeviceRow;

    let dir = std::env::temp_dir().join(format!("pcipool-bench-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("pool.db");
    let setup = std::time::Instant::now();
    {
        let store = SqliteStore::open(&path).context("store")?;
        let mut rows = Vec::new();
        for i in 0..leases {
            let node = pcipool_fabric::NodeId(u32::try_from(1 + i / 256).unwrap_or(u32::MAX));
            let bus = u8::try_from(i % 256).unwrap_or(0);
            let fdid = Fdid {
                node,
                bdf: pcipool_pcie::Bdf::new(0, bus, 0, 0).context("address")?,
                vf: None,
            };
            let lease = Lease {
                id: LeaseId(i + 1),
                borrower: pcipool_fabric::NodeId(100_000),
                tenant: "bench".into(),
                model: AccessModel::Lend,
                epoch: Epoch(i + 1),
                expires_at: u64::MAX / 2,
                ttl: 86_400_000,
                request: None,
                attached: None,
            };
            let info = DeviceInfo {
                fdid,
                class: 0x01_08_02,
                vendor_id: 0x144d,
                device_id: 0xa808,
                name: "nvme".into(),
                labels: BTreeMap::new(),
                link_width: 4,
                link_gts_x10: 80,
                largest_bar: 0x4000,
                models: vec![AccessModel::Lend],
                bars: vec![(0, 0x4000)],
                driver: Some("nvme".into()),
                function: None,
                local_driver: None,
                local_vfs: 0,
            };
            let _ = DeviceClass::of(info.class);
            rows.push((
                fdid,
                DeviceRow {
                    info,
                    state: DeviceState::Lent { lease },
                },
            ));
        }
        let entries: Vec<pcipool_pool::AuditEntry<'_>> = (0..audit)
            .map(|i| pcipool_pool::AuditEntry {
                at: i,
                actor: "bench",
                target: "n1:0000:00:00.0",
                action: "heartbeat",
                before: "",
                after: "",
                result: "ok",
            })
            .collect();
        store.bulk_load(&rows, &entries).context("bulk load")?;
    }
    let setup = setup.elapsed();
    // The restart: what a controller does before it serves again.
    let started = std::time::Instant::now();
    let store = SqliteStore::open(&path).context("reopen")?;
    let devices = store.devices().context("devices")?;
    let active: usize = devices.iter().map(|d| d.value.state.leases().len()).sum();
    let unfinished = store.unfinished_workflows().context("workflows")?;
    let tail = store.last_audit().context("audit tail")?;
    let lab_topology =
        FabricDesc::parse(crate::sim_cmd::LAB_4).map_err(|e| crate::BadInput(e.to_string()))?;
    let controller = Controller::new(store, Policy::default(), lab_topology.topology);
    let ready = started.elapsed();
    drop(controller);
    println!(
        "restart benchmark: {leases} leases, {audit} audit records (built in {:.1} s)",
        setup.as_secs_f64()
    );
    println!(
        "  store reopened, {active} active leases loaded, {} unfinished workflows, audit tail at seq {}: ready in {:.3} s   (target < 2 s)",
        unfinished.len(),
        tail.map_or(0, |r| r.seq),
        ready.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ExitCode::SUCCESS)
}
