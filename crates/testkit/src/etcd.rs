//! Real etcd members for tests: Debian's `etcd` started on free loopback ports with a data directory
//! of their own, killed when dropped. The test command installs `etcd-server`; where the program is
//! missing, [`Cluster::start`] says why and the test prints SKIPPED.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A member of a test cluster.
#[derive(Debug)]
pub struct Member {
    /// Its name (`m1`, ...).
    pub name: String,
    /// Its client URL.
    pub client: String,
    peer: String,
    data: PathBuf,
    log: PathBuf,
    /// The network namespace it runs in (None: this one).
    ns: Option<String>,
    child: Option<Child>,
}

/// A cluster of members on loopback, each killed when the cluster is dropped.
#[derive(Debug)]
pub struct Cluster {
    /// The members.
    pub members: Vec<Member>,
    /// `--initial-cluster`: every member's name and peer URL.
    initial: String,
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// The etcd program, or why there is none.
///
/// # Errors
/// `etcd` is not on the path.
pub fn program() -> Result<PathBuf, String> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "no etcd program (Debian's etcd-server; the test command installs it)".into()
        })
}

impl Member {
    fn spawn(&mut self, initial: &str, state: &str) -> Result<(), String> {
        let log =
            std::fs::File::create(&self.log).map_err(|e| format!("{}: {e}", self.log.display()))?;
        let mut command = match &self.ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(program()?);
                c
            }
            None => Command::new(program()?),
        };
        let child = command
            .args([
                "--name",
                &self.name,
                "--data-dir",
                &self.data.display().to_string(),
                "--listen-client-urls",
                &self.client,
                "--advertise-client-urls",
                &self.client,
                "--listen-peer-urls",
                &self.peer,
                "--initial-advertise-peer-urls",
                &self.peer,
                "--initial-cluster",
                initial,
                "--initial-cluster-state",
                state,
                "--initial-cluster-token",
                "pcipool-test",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting etcd: {e}"))?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILLs the member (its data stays).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Gone already is fine.
            let _killed = c.kill();
            let _reaped = c.wait();
        }
    }
}

impl Cluster {
    /// [`Cluster::start`] for test `test`: None, with its SKIPPED line printed, where etcd is not
    /// installed.
    ///
    /// # Panics
    /// etcd is installed but the cluster does not start: the test fails with the members' logs.
    pub fn start_or_skip(test: &str, dir: &Path, n: usize) -> Option<Self> {
        match Self::start(dir, n) {
            Ok(c) => Some(c),
            Err(why) if program().is_err() => {
                crate::skip::skipped(test, &why);
                None
            }
            Err(why) => panic!("{why}"),
        }
    }

    /// Starts `n` members under `dir` and waits until the cluster answers.
    ///
    /// # Errors
    /// No etcd program; a member does not start or the cluster does not answer within 60 s.
    pub fn start(dir: &Path, n: usize) -> Result<Self, String> {
        program()?;
        let mut members = Vec::new();
        for i in 1..=n {
            members.push(Member {
                name: format!("m{i}"),
                client: format!("http://127.0.0.1:{}", free_port()?),
                peer: format!("http://127.0.0.1:{}", free_port()?),
                data: dir.join(format!("m{i}")),
                log: dir.join(format!("m{i}.log")),
                ns: None,
                child: None,
            });
        }
        Self::launch(members)
    }

    /// Starts one member in each network namespace of `hosts` (namespace, address), on the etcd
    /// ports of that address, and waits until the cluster answers.
    ///
    /// # Errors
    /// As [`Cluster::start`].
    pub fn start_in(dir: &Path, hosts: &[(&str, &str)]) -> Result<Self, String> {
        program()?;
        let members = hosts
            .iter()
            .enumerate()
            .map(|(i, (ns, addr))| Member {
                name: format!("m{}", i + 1),
                client: format!("http://{addr}:2379"),
                peer: format!("http://{addr}:2380"),
                data: dir.join(format!("m{}", i + 1)),
                log: dir.join(format!("m{}.log", i + 1)),
                ns: Some((*ns).to_owned()),
                child: None,
            })
            .collect();
        Self::launch(members)
    }

    fn launch(members: Vec<Member>) -> Result<Self, String> {
        let initial = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Self { members, initial };
        for m in &mut cluster.members {
            m.spawn(&cluster.initial, "new")?;
        }
        cluster.wait_ready(Duration::from_secs(60))?;
        Ok(cluster)
    }

    /// Starts member `i` again on its data (after [`Member::kill`]).
    ///
    /// # Errors
    /// It does not start.
    pub fn restart(&mut self, i: usize) -> Result<(), String> {
        let initial = self.initial.clone();
        self.members[i].spawn(&initial, "existing")
    }

    /// The members' client URLs.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client.clone()).collect()
    }

    /// The cluster as `pcipool server --store` names it: `etcd://HOST:PORT,HOST:PORT,...`.
    pub fn store_url(&self) -> String {
        let members: Vec<&str> = self
            .members
            .iter()
            .map(|m| m.client.trim_start_matches("http://"))
            .collect();
        format!("etcd://{}", members.join(","))
    }

    /// Waits until a member answers a read through the cluster (a leader is elected).
    ///
    /// # Errors
    /// None answers within `within`; the members' logs are in the error.
    pub fn wait_ready(&self, within: Duration) -> Result<(), String> {
        let started = Instant::now();
        while started.elapsed() < within {
            for m in &self.members {
                let answered = Command::new("curl")
                    .args(["-sf", "-m", "2", "-d", r#"{"key":"AA=="}"#])
                    .arg(format!("{}/v3/kv/range", m.client))
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if answered {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let logs: Vec<String> = self
            .members
            .iter()
            .map(|m| {
                let text = std::fs::read_to_string(&m.log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(5).collect();
                format!("{}: {}", m.name, tail.join(" | "))
            })
            .collect();
        Err(format!(
            "etcd did not answer within {within:?}: {}",
            logs.join("\n")
        ))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            m.kill();
        }
    }
}
