//! A pool as separate real processes: `pcipool sim serve` (the hardware, with its data path checking
//! leases with the controller), `pcipool server` and one `pcipool agent` per simulated host.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use pcipool_client::Client;
use pcipool_store::SqliteStore;

/// Spawns `pcipool ARGS` (in namespace `ns`, or here) and waits for the stdout line containing
/// `marker`; returns the rest of it.
pub fn spawn(ns: Option<&str>, args: &[&str], marker: &str) -> (Child, String) {
    let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    crate::support::spawn_until_in(ns, &args, marker)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub fabric_url: String,
    /// Every controller's URL, comma-separated (what clients and agents are given).
    pub url: String,
    /// Each controller's listen address and process (the first is "the server" of one-controller
    /// tests).
    controllers: Vec<(String, Option<Child>)>,
    sim: Child,
    agents: Vec<(u32, Child)>,
    tokens_file: Option<PathBuf>,
    fabric_file: Option<PathBuf>,
    /// The server's `--store` (None: its data directory's SQLite file).
    store: Option<String>,
    /// Where each process runs when the cluster is spread over network namespaces: host name
    /// (`fabric`, `c1`.., `n1`..) -> (namespace, address).
    places: BTreeMap<String, (String, String)>,
    /// More arguments for every controller.
    server_args: Vec<String>,
}

/// The admin secret of a cluster started with a token file.
pub const ADMIN: &str = "admin-secret-0123456789";
/// The agents' secret of a cluster started with a token file.
pub const AGENT: &str = "agent-secret-0123456789";

/// What to start besides the defaults (the built-in 4-host lab, generated tokens).
#[derive(Default)]
pub struct Spec<'a> {
    /// More principals `(name, role, secret)`: the server then reads a token file with these, an
    /// admin ([`ADMIN`]) and the agents ([`AGENT`]); the two are also written where generated ones
    /// would be, so the helpers find them.
    pub tokens: Option<&'a [(&'a str, &'a str, &'a str)]>,
    /// A fabric description, its host count and the devices its agents report.
    pub fabric: Option<(&'a str, u32, usize)>,
    /// The server's `--store` (e.g. `etcd://127.0.0.1:PORT`).
    pub store: Option<&'a str>,
    /// How many controllers share that store (0 or 1: one).
    pub controllers: usize,
    /// Network namespaces to spread the processes over: the simulated fabric in host `fabric`,
    /// controller i in `c<i+1>`, agent n in `n<n>` (None: everything on loopback here).
    pub net: Option<&'a pcipool_testkit::netns::Net>,
    /// More arguments for every controller.
    pub server_args: &'a [&'a str],
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, a) in &mut self.agents {
            let _ = a.kill();
            let _ = a.wait();
        }
        for (_, s) in &mut self.controllers {
            if let Some(s) = s {
                let _ = s.kill();
                let _ = s.wait();
            }
        }
        let _ = self.sim.kill();
        let _ = self.sim.wait();
    }
}

impl Cluster {
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("ctl")
    }

    pub fn token(&self, name: &str) -> String {
        std::fs::read_to_string(self.data().join(name))
            .expect("token file")
            .trim()
            .to_owned()
    }

    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// The built-in lab with a token file of `tokens` (see [`Spec::tokens`]).
    pub fn start_with(tokens: Option<&[(&str, &str, &str)]>) -> Self {
        Self::launch(&Spec {
            tokens,
            ..Spec::default()
        })
    }

    /// The data path's directory (BARs, media, segments).
    pub fn datapath_dir(&self) -> PathBuf {
        self.dir.path().join("datapath")
    }

    pub fn launch(spec: &Spec<'_>) -> Self {
        let tokens = spec.tokens;
        let dir = tempfile::tempdir().expect("tempdir");
        let (hosts, devices) = spec.fabric.map_or((4, 9), |(_, h, d)| (h, d));
        let fabric_file = spec.fabric.map(|(text, _, _)| {
            let path = dir.path().join("fabric.toml");
            std::fs::write(&path, text).expect("fabric file");
            path
        });
        let tokens_file = tokens.map(|more| {
            let data = dir.path().join("ctl");
            std::fs::create_dir_all(&data).expect("data dir");
            std::fs::write(data.join("admin.token"), ADMIN).expect("admin token");
            std::fs::write(data.join("agent.token"), AGENT).expect("agent token");
            let file: String = [("root", "admin", ADMIN), ("hosts", "agent", AGENT)]
                .iter()
                .chain(more)
                .map(|(name, role, token)| {
                    format!(
                        "[[token]]\nname = \"{name}\"\nrole = \"{role}\"\ntoken = \"{token}\"\n"
                    )
                })
                .collect();
            let path = dir.path().join("tokens.toml");
            std::fs::write(&path, file).expect("token file");
            path
        });
        let places: BTreeMap<String, (String, String)> = spec
            .net
            .map(|n| {
                n.hosts
                    .iter()
                    .map(|h| (h.name.clone(), (h.ns.clone(), h.addr.clone())))
                    .collect()
            })
            .unwrap_or_default();
        let listens: Vec<String> = (0..spec.controllers.max(1))
            .map(|i| match places.get(&format!("c{}", i + 1)) {
                Some((_, addr)) => format!("{addr}:7070"),
                None => format!("127.0.0.1:{}", free_port()),
            })
            .collect();
        let controller = listens
            .iter()
            .map(|l| format!("http://{l}"))
            .collect::<Vec<_>>()
            .join(",");
        let token_file = dir.path().join("ctl").join("admin.token");
        let datapath = dir.path().join("datapath");
        let fabric = places.get("fabric").cloned();
        let sim_listen = fabric
            .as_ref()
            .map_or_else(|| "127.0.0.1:0".to_owned(), |(_, a)| format!("{a}:7072"));
        let mut sim_args = vec![
            "sim",
            "serve",
            "--listen",
            &sim_listen,
            "--controller",
            &controller,
            "--controller-token-file",
            token_file.to_str().expect("utf-8 path"),
            "--datapath-dir",
            datapath.to_str().expect("utf-8 path"),
        ];
        if let Some(f) = &fabric_file {
            sim_args.extend(["--fabric", f.to_str().expect("utf-8 path")]);
        }
        let (sim, fabric_url) = spawn(
            fabric.as_ref().map(|(ns, _)| ns.as_str()),
            &sim_args,
            "simulated fabric",
        );
        let fabric_url = fabric_url
            .split(" at ")
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        assert!(
            fabric_url.starts_with("http://"),
            "sim serve printed no URL"
        );
        let mut cluster = Self {
            url: controller,
            controllers: listens.into_iter().map(|l| (l, None)).collect(),
            fabric_url,
            sim,
            agents: Vec::new(),
            tokens_file,
            fabric_file,
            store: spec.store.map(str::to_owned),
            places,
            server_args: spec.server_args.iter().map(|a| (*a).to_owned()).collect(),
            dir,
        };
        for i in 0..cluster.controllers.len() {
            cluster.start_controller(i);
        }
        for node in 1..=hosts {
            cluster.start_agent(node);
        }
        // The lab: five whole devices, and the four VFs it enables on its SR-IOV NIC.
        cluster.wait_for(
            |c| {
                c.client()
                    .hosts()
                    .is_ok_and(|h| h.len() == hosts as usize && h.iter().all(|h| h.agent == "up"))
                    && c.devices().len() == devices
            },
            "every agent and device registered",
        );
        cluster
    }

    pub fn start_server(&mut self) {
        self.start_controller(0);
    }

    pub fn start_controller(&mut self, i: usize) {
        assert!(
            self.try_start_controller(i),
            "controller {i} did not come up on its port"
        );
    }

    /// Controller `i`'s URL.
    pub fn controller_url(&self, i: usize) -> String {
        format!("http://{}", self.controllers[i].0)
    }

    /// Starts controller `i` (its data directory: `ctl`, then `ctl2`, ...); false when it exits
    /// instead of serving.
    pub fn try_start_controller(&mut self, i: usize) -> bool {
        let data = if i == 0 {
            self.data()
        } else {
            self.dir.path().join(format!("ctl{}", i + 1))
        };
        let listen = self.controllers[i].0.clone();
        let mut args = vec![
            "server",
            "--listen",
            &listen,
            "--agent-timeout",
            "2",
            "--data-dir",
            data.to_str().expect("utf-8 path"),
        ];
        if let Some(t) = &self.tokens_file {
            args.extend(["--tokens", t.to_str().expect("utf-8 path")]);
        }
        if let Some(f) = &self.fabric_file {
            args.extend(["--fabric", f.to_str().expect("utf-8 path")]);
        }
        let store = self.store.clone();
        if let Some(s) = &store {
            args.extend(["--store", s]);
        }
        let fabric_url = self.fabric_url.clone();
        args.extend(["--fabric-url", &fabric_url]);
        let more = self.server_args.clone();
        args.extend(more.iter().map(String::as_str));
        let ns = self
            .places
            .get(&format!("c{}", i + 1))
            .map(|(ns, _)| ns.clone());
        let (mut child, url) = spawn(ns.as_deref(), &args, "controller at ");
        if url != self.controller_url(i) {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        self.controllers[i].1 = Some(child);
        true
    }

    pub fn server_running(&self) -> bool {
        self.controllers[0].1.is_some()
    }

    pub fn kill_server(&mut self) {
        self.kill_controller(0);
    }

    /// SIGKILLs controller `i` (if it runs).
    pub fn kill_controller(&mut self, i: usize) {
        if let Some(mut s) = self.controllers[i].1.take() {
            s.kill().expect("SIGKILL");
            let _ = s.wait();
        }
    }

    /// Sends `signal` (e.g. `STOP`, `CONT`) to controller `i`.
    pub fn signal_controller(&self, i: usize, signal: &str) {
        let child = self.controllers[i].1.as_ref().expect("controller runs");
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal}");
    }

    /// What controller `i` says of itself (`GET /v1/controller`), if it answers.
    pub fn controller_view(&self, i: usize) -> Option<pcipool_wire::ControllerView> {
        Client::new(&self.controller_url(i), "")
            .with_timeout(Duration::from_secs(2))
            .get("/v1/controller")
            .ok()
    }

    /// The controller that says it leads, if one does.
    pub fn leader(&self) -> Option<usize> {
        (0..self.controllers.len()).find(|&i| {
            self.controllers[i].1.is_some()
                && self.controller_view(i).is_some_and(|v| v.role == "leader")
        })
    }

    pub fn start_agent(&mut self, node: u32) {
        let place = self.places.get(&format!("n{node}")).cloned();
        let listen = place
            .as_ref()
            .map_or_else(|| "127.0.0.1:0".to_owned(), |(_, a)| format!("{a}:0"));
        let (child, _) = spawn(
            place.as_ref().map(|(ns, _)| ns.as_str()),
            &[
                "agent",
                "--listen",
                &listen,
                "--node",
                &format!("n{node}"),
                "--fabric-url",
                &self.fabric_url,
                "--url",
                &self.url,
                "--token",
                &self.token("agent.token"),
                "--heartbeat-ms",
                "200",
            ],
            "steps served at ",
        );
        self.agents.push((node, child));
    }

    pub fn kill_agent(&mut self, node: u32) {
        if let Some(i) = self.agents.iter().position(|(n, _)| *n == node) {
            let (_, mut a) = self.agents.remove(i);
            a.kill().expect("SIGKILL");
            let _ = a.wait();
        }
    }

    pub fn client(&self) -> Client {
        Client::new(&self.url, &self.token("admin.token"))
    }

    pub fn devices(&self) -> Vec<pcipool_wire::DeviceView> {
        self.client().devices().unwrap_or_default()
    }

    pub fn wait_for(&self, done: impl Fn(&Self) -> bool, what: &str) {
        let until = Instant::now() + Duration::from_secs(30);
        while !done(self) {
            assert!(Instant::now() < until, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the simulated hardware carries: leases with mappings, and shadow devices on borrowers.
    pub fn hardware(&self) -> (BTreeSet<u64>, usize) {
        let v: serde_json::Value = ureq::get(&format!("{}/v1/state", self.fabric_url))
            .call()
            .expect("fabric answers")
            .body_mut()
            .read_json()
            .expect("json");
        let mapped = v["mapped_leases"]
            .as_array()
            .expect("list")
            .iter()
            .filter_map(serde_json::Value::as_u64)
            .collect();
        let shadows = v["shadows"].as_array().map_or(0, Vec::len);
        (mapped, shadows)
    }

    pub fn store(&self) -> SqliteStore {
        SqliteStore::open(&self.data().join("pool.db")).expect("store opens")
    }
}
