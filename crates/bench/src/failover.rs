//! Failover time of a pool on etcd: three etcd members and three controllers (`pcipool server
//! --store etcd://...`) as processes on loopback, the simulated fabric and four agents; the leading
//! controller SIGKILLed again and again, each time timed from the kill to the first borrow that
//! succeeds through the controllers left, then started again to follow.

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pcipool_client::Client;
use pcipool_wire::{BorrowRequest, ControllerView};

use crate::BenchError;

/// A process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // Gone already is fine.
        let _killed = self.0.kill();
        let _reaped = self.0.wait();
    }
}

/// Starts `pcipool ARGS` and waits for the stdout line containing `marker`; the rest of that line.
fn spawn(exe: &Path, args: &[&str], marker: &str) -> Result<(Proc, String), BenchError> {
    let mut child = Command::new(exe)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(BenchError::context(&format!(
            "starting pcipool {}",
            args[0]
        )))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| BenchError::Failed("no stdout".into()))?;
    let mut lines = BufReader::new(stdout).lines();
    let mut rest = None;
    for line in lines.by_ref().map_while(Result::ok) {
        if let Some(r) = line.split(marker).nth(1) {
            rest = Some(r.trim().to_owned());
            break;
        }
    }
    // Keep reading so the process never blocks on a full pipe.
    std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
    let proc = Proc(child);
    match rest {
        Some(r) => Ok((proc, r)),
        None => Err(BenchError::Failed(format!(
            "pcipool {} exited before printing {marker:?}",
            args.join(" ")
        ))),
    }
}

fn free_port() -> Result<u16, BenchError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(BenchError::context("finding a free port"))
}

/// Which controller leads, asked of each.
fn leader(urls: &[String], running: &[Option<Proc>]) -> Option<usize> {
    (0..urls.len()).find(|&i| {
        running.get(i).is_some_and(Option::is_some)
            && Client::new(&urls[i], "")
                .with_timeout(Duration::from_secs(2))
                .get::<ControllerView>("/v1/controller")
                .is_ok_and(|v| v.role == "leader")
    })
}

fn wait_until(
    what: &str,
    within: Duration,
    mut done: impl FnMut() -> bool,
) -> Result<(), BenchError> {
    let until = Instant::now() + within;
    while !done() {
        if Instant::now() > until {
            return Err(BenchError::Failed(format!("{what}: not within {within:?}")));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Kills the leader `kills` times; prints p50, p99 and max of the time to the first borrow after.
///
/// # Errors
/// etcd not installed; a process that does not start; no borrow within 30 s of a kill.
pub fn run(exe: &Path, kills: usize) -> Result<String, BenchError> {
    let dir = crate::scratch_dir("failover")?;
    std::fs::create_dir_all(dir.join("etcd"))
        .map_err(BenchError::context("creating etcd's directory"))?;
    let etcd = pcipool_testkit::etcd::Cluster::start(&dir.join("etcd"), 3)
        .map_err(|e| BenchError::Failed(format!("starting etcd: {e}")))?;
    let store = etcd.store_url();
    let listens: Vec<String> = (0..3)
        .map(|_| free_port().map(|p| format!("127.0.0.1:{p}")))
        .collect::<Result<_, _>>()?;
    let urls: Vec<String> = listens.iter().map(|l| format!("http://{l}")).collect();
    let all = urls.join(",");
    let data = |i: usize| dir.join(format!("ctl{}", i + 1));
    let token_file = data(0).join("admin.token");
    let (_sim, said) = spawn(
        exe,
        &[
            "sim",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--controller",
            &all,
            "--controller-token-file",
            &token_file.display().to_string(),
            "--datapath-dir",
            &dir.join("datapath").display().to_string(),
        ],
        "simulated fabric",
    )?;
    let fabric = said.split(" at ").nth(1).unwrap_or_default().to_owned();
    let start = |i: usize| {
        spawn(
            exe,
            &[
                "server",
                "--data-dir",
                &data(i).display().to_string(),
                "--store",
                &store,
                "--listen",
                &listens[i],
                "--fabric-url",
                &fabric,
                "--agent-timeout",
                "2",
            ],
            "controller at ",
        )
        .map(|(p, _)| p)
    };
    let mut controllers: Vec<Option<Proc>> = Vec::new();
    for i in 0..3 {
        controllers.push(Some(start(i)?));
        if i == 0 {
            wait_until(
                "the first controller leading",
                Duration::from_secs(20),
                || leader(&urls, &controllers).is_some(),
            )?;
        }
    }
    let read = |name: &str| {
        std::fs::read_to_string(data(0).join(name))
            .map(|t| t.trim().to_owned())
            .map_err(BenchError::context(&format!("reading {name}")))
    };
    let (admin, agent_token) = (read("admin.token")?, read("agent.token")?);
    let mut agents = Vec::new();
    for node in 1..=4 {
        agents.push(
            spawn(
                exe,
                &[
                    "agent",
                    "--node",
                    &format!("n{node}"),
                    "--fabric-url",
                    &fabric,
                    "--url",
                    &all,
                    "--token",
                    &agent_token,
                    "--heartbeat-ms",
                    "200",
                ],
                "steps served at ",
            )?
            .0,
        );
    }
    let client = Client::new(&all, &admin).with_timeout(Duration::from_secs(10));
    wait_until("every agent up", Duration::from_secs(30), || {
        client
            .hosts()
            .is_ok_and(|h| h.len() == 4 && h.iter().all(|h| h.agent == "up"))
    })?;
    let request = BorrowRequest {
        selector: pcipool_pool::schedule::Selector {
            class: Some(pcipool_pool::schedule::DeviceClass::Nvme),
            ..Default::default()
        },
        count: 1,
        model: pcipool_qualify::AccessModel::Lend,
        borrower: pcipool_fabric::NodeId(3),
        duration_secs: None,
        max_sharers: None,
        request_id: None,
        wait: true,
    };
    let mut times = Vec::new();
    let mut refused = 0usize;
    for _ in 0..kills {
        let mut current = None;
        wait_until("a leader", Duration::from_secs(30), || {
            current = leader(&urls, &controllers);
            current.is_some()
        })?;
        let Some(l) = current else {
            continue;
        };
        controllers[l] = None;
        let killed = Instant::now();
        let lease = loop {
            match client.borrow(&request) {
                Ok(g) if !g.is_empty() => break g[0].lease_id.0,
                Ok(_) | Err(_) if killed.elapsed() < Duration::from_secs(30) => {
                    refused += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => {
                    return Err(BenchError::Failed(format!(
                        "no borrow within 30 s of the leader's kill: {other:?}"
                    )));
                }
            }
        };
        times.push(killed.elapsed());
        client
            .release(lease)
            .map_err(|e| BenchError::Failed(format!("releasing lease {lease}: {e}")))?;
        controllers[l] = Some(start(l)?);
    }
    drop(agents);
    drop(controllers);
    drop(etcd);
    // Scratch only: losing it loses no result.
    let _removed = std::fs::remove_dir_all(&dir);
    times.sort();
    let s = |d: Duration| d.as_secs_f64();
    let mut out = String::new();
    writeln!(
        out,
        "failover benchmark: 3 etcd members, 3 controllers (leadership lease 2 s), 4 agents; {kills} leader SIGKILLs"
    )?;
    writeln!(
        out,
        "  leader SIGKILL to the first successful borrow through the others: p50 {:.2} s, p99 {:.2} s, max {:.2} s (target: p99 under 5 s)",
        s(crate::per_mille(&times, 500)),
        s(crate::per_mille(&times, 990)),
        s(times.last().copied().unwrap_or_default())
    )?;
    writeln!(
        out,
        "  {refused} borrows refused or unanswered meanwhile (retried every 20 ms)"
    )?;
    Ok(out)
}
