//! A running lab: the guests, the controller process, the fabric manager.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use pcipool_fabric::{Fdid, NodeId};
use pcipool_fabric_qemu::{Drive, Guest, QemuFabric};
use pcipool_vm::initramfs::{self, Contents};
use pcipool_vm::kernel::Kernel;
use pcipool_vm::vm::{GUEST_NET, Ran, Spec, Vm};

use crate::LabError;
use crate::controller::ControllerProcess;
use crate::description::{Description, HostSpec};
use crate::options::Options;

/// Modules the guests load at boot (their dependencies come along).
pub const GUEST_MODULES: [&str; 6] = [
    "nvme",
    "vfio-pci",
    "virtio_pci",
    "virtio_net",
    "ext4",
    "crc32c_generic",
];

/// Where, inside every guest, the controller is reached: QEMU runs `pcipool relay` per connection.
const GUEST_CONTROLLER: &str = "10.0.2.100:7070";

/// The port each guest's agent listens on inside the guest.
const GUEST_AGENT_PORT: u16 = 7171;

/// One host of the lab.
struct Host {
    spec: HostSpec,
    /// Its QEMU machine, to boot it again after it was killed.
    machine: Spec,
    vm: Mutex<Vm>,
    /// The machine's 127.0.0.1 port that reaches the guest's agent.
    agent_port: u16,
}

/// A running lab. Dropping it stops everything: the fabric manager, the controller, the guests.
pub struct Lab {
    desc: Description,
    dir: PathBuf,
    hosts: BTreeMap<NodeId, Host>,
    controller: Mutex<ControllerProcess>,
    fabric: QemuFabric,
    stop_fabric: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    /// Runs the fabric manager, and waits for the signals of `pcipool lab up`.
    runtime: tokio::runtime::Runtime,
    /// What a guest boots again with: the kernel and the initramfs.
    kernel_image: PathBuf,
    initrd: PathBuf,
    /// The options the lab started with (boot and registration deadlines, heartbeat).
    opts: Options,
    url: String,
    /// The fabric manager's URL.
    fabric_url: String,
    admin_token: String,
    agent_token: String,
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab")
            .field("dir", &self.dir)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The controller's tokens: the admin's and the agents' (`controller/admin.token`, `agent.token`), and a
/// tenant's (`controller/tenant.token`, tenant `tenant`) for trying what a tenant may not do. All three
/// are in `controller/tokens.toml`, the controller's `--tokens` file; a restarted lab keeps them.
struct Tokens {
    admin: String,
    agent: String,
}

impl Tokens {
    fn write(dir: &Path) -> Result<Self, LabError> {
        std::fs::create_dir_all(dir).map_err(LabError::io("creating controller/"))?;
        let token = |name: &str| {
            pcipool_serve::tokens::token_file(dir, name)
                .map_err(|e| LabError::Setup(format!("controller/{name}: {e}")))
        };
        let (admin, agent, tenant) = (
            token("admin.token")?,
            token("agent.token")?,
            token("tenant.token")?,
        );
        let file = format!(
            "[[token]]\nname = \"admin\"\nrole = \"admin\"\ntoken = \"{admin}\"\n\n\
             [[token]]\nname = \"agent\"\nrole = \"agent\"\ntoken = \"{agent}\"\n\n\
             [[token]]\nname = \"tenant\"\nrole = \"tenant\"\ntoken = \"{tenant}\"\n"
        );
        let path = dir.join("tokens.toml");
        std::fs::write(&path, file).map_err(LabError::io("writing controller/tokens.toml"))?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(LabError::io("restricting controller/tokens.toml"))?;
        Ok(Self { admin, agent })
    }
}

fn free_port() -> Result<u16, LabError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(LabError::io("finding a free port"))
}

fn write(path: &Path, text: &str) -> Result<(), LabError> {
    std::fs::write(path, text).map_err(LabError::io(format!("writing {}", path.display())))
}

/// Creates the drive images that do not exist yet: `size_mib` MiB, sparse, starting with the marker.
fn images(desc: &Description, dir: &Path) -> Result<BTreeMap<String, PathBuf>, LabError> {
    let images = dir.join("images");
    std::fs::create_dir_all(&images).map_err(LabError::io("creating images/"))?;
    let mut paths = BTreeMap::new();
    for drive in desc.host.iter().flat_map(|h| &h.nvme) {
        let path = images.join(format!("{}.img", drive.serial));
        if !path.exists() {
            let mut file = std::fs::File::create(&path)
                .map_err(LabError::io(format!("creating {}", path.display())))?;
            file.write_all(drive.marker().as_bytes())
                .and_then(|()| file.set_len(drive.size_mib << 20))
                .map_err(LabError::io(format!("writing {}", path.display())))?;
        }
        paths.insert(drive.serial.clone(), path);
    }
    Ok(paths)
}

/// The guest's machine: its drives in the first root ports, its NIC in the last.
fn machine(h: &HostSpec, images: &BTreeMap<String, PathBuf>, relay: &str, agent_port: u16) -> Spec {
    let mut spec = Spec::new(h.slots);
    spec.memory_mib = h.memory_mib;
    for (i, d) in h.nvme.iter().enumerate() {
        let (slot, image) = (HostSpec::drive_slot(i), &images[&d.serial]);
        spec = match d.sriov_vfs {
            Some(vfs) => spec.nvme_sriov(&d.serial, image, slot, vfs),
            None => spec.nvme(&d.serial, image, slot),
        };
    }
    spec.forwarded_nic(
        h.nic_slot(),
        GUEST_CONTROLLER,
        relay,
        agent_port,
        GUEST_AGENT_PORT,
    )
}

/// The fabric: every guest's QMP socket and free slots, every lendable drive with its image.
fn fabric(desc: &Description, dir: &Path, images: &BTreeMap<String, PathBuf>) -> QemuFabric {
    let guests = desc
        .host
        .iter()
        .map(|h| Guest {
            node: h.name,
            qmp: dir.join("hosts").join(h.name.to_string()).join("qmp.sock"),
            free_slots: h.free_slots(),
        })
        .collect();
    let drives = desc
        .host
        .iter()
        .flat_map(|h| {
            h.nvme
                .iter()
                .enumerate()
                .filter(|(_, d)| d.lendable())
                .map(move |(i, d)| (h, i, d))
        })
        .filter_map(|(h, i, d)| {
            let slot = HostSpec::drive_slot(i);
            Some(Drive {
                fdid: Fdid {
                    node: h.name,
                    bdf: HostSpec::address_in_slot(slot)?,
                    vf: None,
                },
                image: images[&d.serial].clone(),
                serial: d.serial.clone(),
                home_slot: format!("rp{slot}"),
            })
        })
        .collect();
    QemuFabric::new(guests, drives)
}

impl Lab {
    /// Boots the lab `text` describes, per `opts`, and returns once every agent has registered.
    ///
    /// # Errors
    /// A bad description ([`LabError::Description`]), QEMU missing ([`LabError::Unavailable`]), a guest
    /// that does not boot, a controller that does not start, agents that do not register.
    pub fn up(text: &str, opts: &Options) -> Result<Self, LabError> {
        let desc = Description::parse(text)?;
        let relay_program = opts.pcipool.display().to_string();
        if relay_program.contains([',', ' ']) {
            return Err(LabError::Setup(format!(
                "{relay_program}: QEMU's forward cannot run a program whose path holds ',' or ' '"
            )));
        }
        pcipool_vm::tools::ensure()?;
        opts.progress
            .say("fetching the guests' kernel (cached after the first time)");
        let kernel = Kernel::fetch(&pcipool_vm::cache_dir())?;
        opts.progress.say(&format!(
            "kernel {}; booting {} guests",
            kernel.version,
            desc.host.len()
        ));
        let dir = opts.dir.clone();
        std::fs::create_dir_all(&dir)
            .map_err(LabError::io(format!("creating {}", dir.display())))?;
        write(&dir.join("lab.toml"), text)?;
        write(&dir.join("fabric.toml"), &desc.fabric_toml())?;
        let images = images(&desc, &dir)?;
        let initrd = dir.join("initramfs.cpio");
        let programs = [opts.pcipool.as_path()];
        // The machine's pci.ids, where it has one, names the guests' devices in the pool.
        let ids = ["/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids"]
            .iter()
            .map(Path::new)
            .find(|p| p.exists());
        let files: Vec<(&Path, &str)> = ids
            .map(|p| (p, "/usr/share/misc/pci.ids"))
            .into_iter()
            .collect();
        let contents = Contents {
            kernel: &kernel,
            modules: &GUEST_MODULES,
            programs: &programs,
            files: &files,
        };
        initramfs::build(&contents, &dir, &initrd)?;
        // The staging tree is only the cpio's source.
        let _kept = std::fs::remove_dir_all(dir.join("initramfs"));

        let fabric = fabric(&desc, &dir, &images);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(LabError::io("starting the fabric manager's runtime"))?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .map_err(LabError::io("binding the fabric manager"))?;
        let fabric_url = format!(
            "http://{}",
            listener
                .local_addr()
                .map_err(LabError::io("fabric address"))?
        );
        let fabric_url_kept = fabric_url.clone();
        let (stop_fabric, fabric_stopped) = tokio::sync::oneshot::channel::<()>();
        runtime.spawn(pcipool_agent::fabric_manager::serve(
            Arc::new(Mutex::new(fabric.clone())),
            listener,
            async {
                // A dropped sender also stops it.
                let _either = fabric_stopped.await;
            },
        ));

        let port = match opts.controller_port {
            0 => free_port()?,
            p => p,
        };
        let controller_dir = dir.join("controller");
        let tokens = Tokens::write(&controller_dir)?;
        let mut controller = ControllerProcess::new(
            &opts.pcipool,
            vec![
                "--data-dir".into(),
                controller_dir.display().to_string(),
                "--fabric".into(),
                dir.join("fabric.toml").display().to_string(),
                "--fabric-url".into(),
                fabric_url,
                "--fabric-attachment".into(),
                "whole-device".into(),
                "--agent-timeout".into(),
                opts.agent_timeout.as_secs().max(1).to_string(),
                "--tokens".into(),
                controller_dir.join("tokens.toml").display().to_string(),
                "--listen".into(),
                format!("127.0.0.1:{port}"),
            ],
            &controller_dir,
        );
        controller.start(Duration::from_secs(30))?;
        let Tokens {
            admin: admin_token,
            agent: agent_token,
        } = tokens;

        let relay = format!("{relay_program} relay 127.0.0.1:{port}");
        let hosts = Self::boot(&desc, &dir, &kernel, &initrd, &images, &relay, opts)?;
        let lab = Self {
            desc,
            dir,
            hosts,
            controller: Mutex::new(controller),
            fabric,
            stop_fabric: Mutex::new(Some(stop_fabric)),
            runtime,
            kernel_image: kernel.image.clone(),
            initrd: initrd.clone(),
            opts: opts.clone(),
            url: format!("http://127.0.0.1:{port}"),
            fabric_url: fabric_url_kept,
            admin_token,
            agent_token,
        };
        for node in lab.hosts.keys() {
            lab.start_agent(*node, opts.heartbeat, true)?;
        }
        opts.progress
            .say("waiting for the guests' agents to register with the controller");
        lab.wait_for_agents(opts.register_within)?;
        Ok(lab)
    }

    /// Boots every guest at once; all or none.
    fn boot(
        desc: &Description,
        dir: &Path,
        kernel: &Kernel,
        initrd: &Path,
        images: &BTreeMap<String, PathBuf>,
        relay: &str,
        opts: &Options,
    ) -> Result<BTreeMap<NodeId, Host>, LabError> {
        let ports = desc
            .host
            .iter()
            .map(|_| free_port())
            .collect::<Result<Vec<_>, _>>()?;
        let booted: Vec<Result<Host, LabError>> = std::thread::scope(|s| {
            let boots: Vec<_> = desc
                .host
                .iter()
                .zip(&ports)
                .map(|(h, &agent_port)| {
                    s.spawn(move || {
                        let vm_dir = dir.join("hosts").join(h.name.to_string());
                        let spec = machine(h, images, relay, agent_port);
                        let vm = Vm::boot(&kernel.image, initrd, &spec, &vm_dir, opts.boot_within)?;
                        write(&vm_dir.join("qemu.pid"), &vm.pid().to_string())?;
                        tracing::info!(host = %h.name, boot_s = vm.boot_time.as_secs_f64(), "guest booted");
                        opts.progress.say(&format!(
                            "{} booted in {:.1} s",
                            h.name,
                            vm.boot_time.as_secs_f64()
                        ));
                        Ok(Host {
                            spec: h.clone(),
                            machine: spec,
                            vm: Mutex::new(vm),
                            agent_port,
                        })
                    })
                })
                .collect();
            boots
                .into_iter()
                .map(|b| {
                    b.join()
                        .unwrap_or_else(|_| Err(LabError::Setup("a boot thread panicked".into())))
                })
                .collect()
        });
        let mut hosts = BTreeMap::new();
        for host in booted {
            let host = host?;
            hosts.insert(host.spec.name, host);
        }
        Ok(hosts)
    }

    /// Configures the guest's NIC and starts its agent: a lender's pool is its lendable drives; a
    /// host with none only borrows.
    fn start_agent(&self, node: NodeId, heartbeat: Duration, booted: bool) -> Result<(), LabError> {
        let host = self.host(node)?;
        let pool: Vec<String> = host
            .spec
            .lent_drives()
            .iter()
            .map(|(f, _)| f.bdf.to_string())
            .collect();
        let lends = if pool.is_empty() {
            "--borrower-only".to_owned()
        } else {
            format!("--pool {}", pool.join(" "))
        };
        let command = format!(
            "PCIPOOL_LOG=info pcipool agent --node {node} --backend linux {lends} --url http://{GUEST_CONTROLLER} --token {} --listen 0.0.0.0:{GUEST_AGENT_PORT} --advertise http://127.0.0.1:{} --state-dir /var/lib/pcipool-agent --heartbeat-ms {} > /tmp/agent.log 2>&1 &",
            self.agent_token,
            host.agent_port,
            heartbeat.as_millis()
        );
        // A guest just booted has no network yet; one whose agent died has.
        let net = if booted { GUEST_NET } else { "true" };
        for step in [net, "mkdir -p /var/lib/pcipool-agent", command.as_str()] {
            let ran = self.exec(node, step, Duration::from_secs(60))?;
            if ran.status != 0 {
                return Err(LabError::Setup(format!(
                    "{node}: {step}: exit {}: {}",
                    ran.status, ran.output
                )));
            }
        }
        Ok(())
    }

    /// Waits until every host's agent is up and every lendable drive is in the pool.
    fn wait_for_agents(&self, within: Duration) -> Result<(), LabError> {
        let client = self.client();
        let drives: Vec<Fdid> = self.desc.lent_drives().iter().map(|(f, _)| *f).collect();
        let started = Instant::now();
        loop {
            let devices = client.devices().unwrap_or_default();
            let up: Vec<NodeId> = client
                .hosts()
                .unwrap_or_default()
                .into_iter()
                .filter(|h| h.agent == "up")
                .map(|h| h.node)
                .collect();
            let missing_hosts: Vec<NodeId> = self
                .hosts
                .keys()
                .filter(|n| !up.contains(n))
                .copied()
                .collect();
            let missing_drives = drives
                .iter()
                .filter(|f| !devices.iter().any(|d| d.fdid == **f));
            if missing_hosts.is_empty() && missing_drives.clone().next().is_none() {
                return Ok(());
            }
            if started.elapsed() > within {
                let logs: Vec<String> = missing_hosts
                    .iter()
                    .map(|n| {
                        let log = self
                            .exec(*n, "tail -n 20 /tmp/agent.log", Duration::from_secs(20))
                            .map(|r| r.output)
                            .unwrap_or_else(|e| e.to_string());
                        format!("{n}'s agent log:\n{log}")
                    })
                    .collect();
                return Err(LabError::Setup(format!(
                    "within {within:?} the agents of {missing_hosts:?} did not come up or {:?} were not offered\n{}",
                    missing_drives.collect::<Vec<_>>(),
                    logs.join("\n")
                )));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn host(&self, node: NodeId) -> Result<&Host, LabError> {
        self.hosts
            .get(&node)
            .ok_or_else(|| LabError::NoSuchHost(node.to_string()))
    }

    /// Runs `command` with the guest's shell; its output and exit status.
    ///
    /// # Errors
    /// No such host, or the guest did not answer within `within`.
    pub fn exec(&self, node: NodeId, command: &str, within: Duration) -> Result<Ran, LabError> {
        let host = self.host(node)?;
        Ok(lock(&host.vm).run_within(command, within)?)
    }

    /// SIGKILLs the guest's QEMU, as a host that loses power.
    ///
    /// # Errors
    /// No such host.
    pub fn kill_host(&self, node: NodeId) -> Result<(), LabError> {
        lock(&self.host(node)?.vm).kill();
        Ok(())
    }

    /// Boots a killed host's guest again (the same machine and images: a host back after losing
    /// power), starts its agent and returns once every agent is up and every drive offered.
    ///
    /// # Errors
    /// No such host; the guest does not boot (an image another guest still holds is refused by
    /// QEMU's lock); the agents do not come up.
    pub fn restart_host(&self, node: NodeId) -> Result<(), LabError> {
        let host = self.host(node)?;
        let vm_dir = self.dir.join("hosts").join(node.to_string());
        lock(&host.vm).kill();
        self.wait_for_drives_home(node, self.opts.boot_within)?;
        {
            let mut vm = lock(&host.vm);
            let fresh = Vm::boot(
                &self.kernel_image,
                &self.initrd,
                &host.machine,
                &vm_dir,
                self.opts.boot_within,
            )?;
            write(&vm_dir.join("qemu.pid"), &fresh.pid().to_string())?;
            *vm = fresh;
        }
        let head = self.audit_head();
        self.start_agent(node, self.opts.heartbeat, true)?;
        self.wait_for_agent_port(node, self.opts.register_within)?;
        self.wait_for_registration(node, head, self.opts.register_within)?;
        self.wait_for_agents(self.opts.register_within)
    }

    /// Waits until no other guest holds a drive of `node`: its machine boots with its drives, and QEMU
    /// refuses to open an image another QEMU has open. A lent drive leaves its borrower when the
    /// controller has counted its lender lost and the fabric has pulled it (seconds after the
    /// agent timeout).
    fn wait_for_drives_home(&self, node: NodeId, within: Duration) -> Result<(), LabError> {
        let host = self.host(node)?;
        let started = Instant::now();
        loop {
            let mut away = Vec::new();
            for (fdid, drive) in host.spec.lent_drives() {
                match self.fabric.holder(fdid) {
                    Ok(Some(other)) if other != node => {
                        away.push(format!("{} in {other}", drive.serial));
                    }
                    Ok(_) => {}
                    Err(e) => away.push(format!("{}: {e}", drive.serial)),
                }
            }
            if away.is_empty() {
                return Ok(());
            }
            if started.elapsed() > within {
                return Err(LabError::Setup(format!(
                    "{node} cannot boot while another guest holds its drives ({}): they come home once the controller has counted {node} lost",
                    away.join(", ")
                )));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// SIGKILLs the guest's agent; the guest runs on, its devices as they were.
    ///
    /// # Errors
    /// No such host; the guest does not answer, or has no agent running.
    pub fn kill_agent(&self, node: NodeId) -> Result<(), LabError> {
        let ran = self.exec(
            node,
            "p=$(pidof pcipool) && kill -9 $p",
            Duration::from_secs(20),
        )?;
        if ran.status != 0 {
            return Err(LabError::Setup(format!(
                "{node} has no agent to kill: {}",
                ran.output.trim()
            )));
        }
        Ok(())
    }

    /// Starts the guest's agent again after it was killed, and returns once every agent is up.
    ///
    /// # Errors
    /// No such host; the agent does not come up.
    pub fn start_agent_again(&self, node: NodeId) -> Result<(), LabError> {
        let head = self.audit_head();
        self.start_agent(node, self.opts.heartbeat, false)?;
        self.wait_for_agent_port(node, self.opts.register_within)?;
        self.wait_for_registration(node, head, self.opts.register_within)?;
        self.wait_for_agents(self.opts.register_within)
    }

    /// The controller's last audit sequence number (0 when it cannot be asked).
    fn audit_head(&self) -> u64 {
        self.client().audit_verify().map_or(0, |v| v.records)
    }

    /// Waits until the controller has audited a registration of `node`'s agent after `head`: the
    /// controller may still count a killed agent up, and the new one refuses steps until it has
    /// registered.
    fn wait_for_registration(
        &self,
        node: NodeId,
        head: u64,
        within: Duration,
    ) -> Result<(), LabError> {
        let client = self.client();
        let started = Instant::now();
        loop {
            let registered = client.audit(head + 1, 10_000).is_ok_and(|records| {
                records
                    .iter()
                    .any(|r| r.action == "agent_register" && r.target == node.to_string())
            });
            if registered {
                return Ok(());
            }
            if started.elapsed() > within {
                return Err(LabError::Setup(format!(
                    "{node}'s agent did not register within {within:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits until `node`'s agent answers on its port (`GET /v1/stats`): the controller may still
    /// count a killed agent up, so its word alone does not say that the new one runs.
    fn wait_for_agent_port(&self, node: NodeId, within: Duration) -> Result<(), LabError> {
        let url = format!("http://127.0.0.1:{}/v1/stats", self.host(node)?.agent_port);
        let http = pcipool_client::http_agent(Duration::from_secs(5));
        let started = Instant::now();
        loop {
            match http.get(&url).call() {
                Ok(r) if r.status().is_success() => return Ok(()),
                answered => {
                    if started.elapsed() > within {
                        return Err(LabError::Setup(format!(
                            "{node}'s agent does not answer at {url} after {within:?}: {answered:?}"
                        )));
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Cuts (`up` false) or restores the guest's network link (QMP `set_link`): its agent and the
    /// controller no longer reach each other; the fabric (QEMU) still reaches the guest's slots.
    ///
    /// # Errors
    /// No such host; QEMU refuses.
    pub fn set_link(&self, node: NodeId, up: bool) -> Result<(), LabError> {
        self.host(node)?;
        let qmp_path = self
            .dir
            .join("hosts")
            .join(node.to_string())
            .join("qmp.sock");
        let mut qmp = pcipool_fabric_qemu::Qmp::connect(&qmp_path, Duration::from_secs(10))
            .map_err(|e| LabError::Setup(format!("{node}'s QMP: {e}")))?;
        qmp.execute(
            "set_link",
            serde_json::json!({ "name": "net0", "up": up }),
            Duration::from_secs(10),
        )
        .map_err(|e| LabError::Setup(format!("{node}: set_link: {e}")))?;
        Ok(())
    }

    /// Where each lendable drive is, as QEMU says (whose QEMU holds its image, whose PCI tree has
    /// it), and each guest's free hot-plug slots: the hardware's view, independent of the store.
    ///
    /// # Errors
    /// A running guest that cannot be asked.
    pub fn fabric_view(&self) -> Result<crate::FabricView, LabError> {
        let failed = |e: pcipool_backend::FabricError| LabError::Setup(format!("QMP: {e}"));
        let mut drives = Vec::new();
        for (fdid, _) in self.desc.lent_drives() {
            drives.push(crate::DriveView {
                fdid,
                holder: self.fabric.holder(fdid).map_err(failed)?,
                in_pci_tree: self.fabric.in_pci_tree(fdid).map_err(failed)?,
            });
        }
        let mut free_slots = BTreeMap::new();
        for node in self.hosts.keys() {
            let free = match self.fabric.free_slots(*node) {
                Ok(free) => Some(free.len()),
                Err(pcipool_backend::FabricError::HostDown(_)) => None,
                Err(e) => return Err(failed(e)),
            };
            free_slots.insert(*node, free);
        }
        Ok(crate::FabricView { drives, free_slots })
    }

    /// SIGKILLs the controller.
    pub fn kill_controller(&self) {
        lock(&self.controller).kill();
    }

    /// Starts the controller again on its store.
    ///
    /// # Errors
    /// It does not start.
    pub fn restart_controller(&self) -> Result<(), LabError> {
        lock(&self.controller).start(Duration::from_secs(30))
    }

    /// The description the lab runs.
    pub fn description(&self) -> &Description {
        &self.desc
    }

    /// The lab's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The controller's URL on 127.0.0.1.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The controller's admin token.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// A client of the controller with the admin token.
    pub fn client(&self) -> pcipool_client::Client {
        pcipool_client::Client::new(&self.url, &self.admin_token)
    }

    /// The fabric manager's URL (its `GET /v1/stats`: steps and time waiting on QEMU).
    pub fn fabric_manager_url(&self) -> &str {
        &self.fabric_url
    }

    /// `node`'s agent as the machine reaches it (its `GET /v1/stats`: steps and time waiting on the
    /// kernel).
    pub fn agent_url(&self, node: NodeId) -> Option<String> {
        self.hosts
            .get(&node)
            .map(|h| format!("http://127.0.0.1:{}", h.agent_port))
    }

    /// The fabric, to ask QEMU which guest holds a drive.
    pub fn fabric(&self) -> &QemuFabric {
        &self.fabric
    }

    /// The runtime `pcipool lab up` waits on.
    pub(crate) fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.runtime
    }

    /// The hosts' names.
    pub fn nodes(&self) -> Vec<NodeId> {
        self.hosts.keys().copied().collect()
    }

    /// What runs: the controller, every guest and where each drive is, asked of QEMU now.
    pub fn status(&self) -> crate::LabStatus {
        let devices = self.client().devices().unwrap_or_default();
        let controller_pid = {
            let mut c = lock(&self.controller);
            c.running().then(|| c.pid()).flatten()
        };
        let hosts = self
            .hosts
            .values()
            .map(|h| {
                let (qemu_pid, running) = {
                    let mut vm = lock(&h.vm);
                    (vm.pid(), vm.running())
                };
                let vm_dir = self.dir.join("hosts").join(h.spec.name.to_string());
                crate::HostStatus::new(h, qemu_pid, running, &vm_dir, &self.fabric, &devices)
            })
            .collect();
        crate::LabStatus {
            dir: self.dir.clone(),
            url: self.url.clone(),
            admin_token_file: self.dir.join("controller/admin.token"),
            tenant_token_file: self.dir.join("controller/tenant.token"),
            controller_pid,
            hosts,
        }
    }
}

impl crate::HostStatus {
    fn new(
        h: &Host,
        qemu_pid: u32,
        running: bool,
        vm_dir: &Path,
        fabric: &QemuFabric,
        devices: &[pcipool_wire::DeviceView],
    ) -> Self {
        let drives = h
            .spec
            .nvme
            .iter()
            .map(|d| {
                let lent = h.spec.lent_drives();
                let fdid = lent
                    .iter()
                    .find(|(_, l)| l.serial == d.serial)
                    .map(|(f, _)| *f);
                let (held_by, state) = match fdid {
                    Some(f) => (
                        fabric.holder(f).map_or_else(
                            |e| format!("unknown ({e})"),
                            |n| n.map_or_else(|| "nobody".to_owned(), |n| n.to_string()),
                        ),
                        devices
                            .iter()
                            .find(|v| v.fdid == f)
                            .map_or_else(|| "not in the pool".to_owned(), |v| v.state.clone()),
                    ),
                    None => (
                        if running {
                            h.spec.name.to_string()
                        } else {
                            "nobody".to_owned()
                        },
                        "stays home (SR-IOV: QEMU cannot hot-plug its NVMe subsystem)".to_owned(),
                    ),
                };
                crate::DriveStatus {
                    serial: d.serial.clone(),
                    fdid,
                    held_by,
                    state,
                }
            })
            .collect();
        Self {
            node: h.spec.name,
            qemu_pid,
            running,
            qmp: vm_dir.join("qmp.sock"),
            serial_log: vm_dir.join("serial.log"),
            agent_url: format!("http://127.0.0.1:{}", h.agent_port),
            drives,
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(stop) = lock(&self.stop_fabric).take() {
            // A manager that already stopped needs no signal.
            let _stopped = stop.send(());
        }
        lock(&self.controller).kill();
        // The guests' QEMUs die with their `Vm`s, dropped after this.
    }
}
