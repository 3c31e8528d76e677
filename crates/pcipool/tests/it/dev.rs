//! `pcipool dev` as a real process on loopback, driven by the CLI and by concurrent API clients.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub(crate) struct Dev {
    child: Child,
    pub(crate) url: String,
    pub(crate) token: String,
    _dir: tempfile::TempDir,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn start() -> Dev {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pcipool"))
        .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("pcipool dev starts");
    let stdout = child.stdout.take().expect("stdout piped");
    let mut url = String::new();
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref().map_while(Result::ok) {
        if let Some(rest) = line.split("served at ").nth(1) {
            url = rest.trim().to_owned();
            break;
        }
    }
    // Keep draining so the server never writes into a closed pipe.
    std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
    let token = std::fs::read_to_string(dir.path().join("admin.token"))
        .expect("admin token written")
        .trim()
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "no address printed");
    Dev {
        child,
        url,
        token,
        _dir: dir,
    }
}

pub(crate) fn cli(dev: &Dev, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pcipool"))
        .args(args)
        .env("PCIPOOL_URL", &dev.url)
        .env("PCIPOOL_TOKEN", &dev.token)
        .output()
        .expect("cli runs")
}

#[test]
fn borrow_json_has_lease_id_and_fdid_and_release_works() {
    let dev = start();
    let out = cli(
        &dev,
        &[
            "borrow", "--class", "nvme", "--host", "n3", "--output", "json",
        ],
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let lease = json[0]["lease_id"].as_u64().expect("lease_id");
    let fdid = json[0]["fdid"].as_str().map(str::to_owned);
    let released = cli(&dev, &["release", &lease.to_string()]).status.code();
    let verify = cli(&dev, &["audit", "verify"]);
    assert_eq!(
        (
            fdid.is_some(),
            released,
            verify.status.code(),
            String::from_utf8_lossy(&verify.stdout).contains("intact")
        ),
        (true, Some(0), Some(0), true)
    );
}

#[test]
fn sixty_four_clients_race_for_one_device_and_exactly_one_wins() {
    let dev = start();
    let handles: Vec<_> = (0..64)
        .map(|i| {
            let (url, token) = (dev.url.clone(), dev.token.clone());
            std::thread::spawn(move || {
                let client = pcipool_client::Client::new(&url, &token);
                let request = pcipool_wire::BorrowRequest {
                    selector: pcipool_pool::schedule::Selector {
                        fdid: Some("n1:0000:03:00.0".parse().expect("fdid")),
                        ..Default::default()
                    },
                    count: 1,
                    model: pcipool_qualify::AccessModel::Lend,
                    borrower: pcipool_fabric::NodeId(3 + (i % 2)),
                    duration_secs: None,
                    max_sharers: None,
                    request_id: None,
                    wait: true,
                };
                match client.borrow(&request) {
                    Ok(_) => "won".to_owned(),
                    Err(pcipool_client::ClientError::Api { code, .. }) => code,
                    Err(e) => format!("transport: {e}"),
                }
            })
        })
        .collect();
    let results: Vec<String> = handles
        .into_iter()
        .map(|h| h.join().unwrap_or_else(|_| "panic".into()))
        .collect();
    let won = results.iter().filter(|r| *r == "won").count();
    let conflicts = results.iter().filter(|r| *r == "CONFLICT").count();
    assert_eq!((won, conflicts), (1, 63), "{results:?}");
}

#[test]
fn unknown_token_is_refused_with_json_error() {
    let dev = start();
    let out = Command::new(env!("CARGO_BIN_EXE_pcipool"))
        .args(["lease", "list"])
        .env("PCIPOOL_URL", &dev.url)
        .env("PCIPOOL_TOKEN", "wrong")
        .output()
        .expect("cli runs");
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).contains("UNAUTHORIZED")
        ),
        (Some(1), true)
    );
}

#[test]
fn openapi_document_lists_every_route() {
    let dev = start();
    let url = format!("{}/v1/openapi.json", dev.url);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent.get(&url).call().expect("served");
    let doc: serde_json::Value = resp.body_mut().read_json().expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    let mut paths: Vec<&str> = doc["paths"]
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    paths.sort_unstable();
    // The pool API, the agents' routes and the data path `dev` serves beside them.
    assert_eq!(
        paths,
        vec![
            "/metrics",
            "/v1/agents",
            "/v1/agents/{node}/heartbeat",
            "/v1/audit",
            "/v1/audit/verify",
            "/v1/datapath",
            "/v1/datapath/events",
            "/v1/datapath/exports",
            "/v1/datapath/leases/{lease}",
            "/v1/datapath/leases/{lease}/bar",
            "/v1/datapath/leases/{lease}/device-memory",
            "/v1/datapath/leases/{lease}/interrupts",
            "/v1/datapath/leases/{lease}/release",
            "/v1/datapath/leases/{lease}/segments",
            "/v1/datapath/segments",
            "/v1/datapath/segments/{host}/{name}",
            "/v1/devices",
            "/v1/devices/{fdid}",
            "/v1/devices/{fdid}/actions",
            "/v1/events",
            "/v1/hosts",
            "/v1/leases",
            "/v1/leases/{id}",
            "/v1/leases/{id}/downgrade",
            "/v1/leases/{id}/heartbeat",
            "/v1/openapi.json",
            "/v1/topology",
            "/v1/whoami",
            "/v1/workflows/{id}"
        ]
    );
}

#[test]
fn drain_undrain_workflow_show_and_metrics() {
    let dev = start();
    let drained = cli(&dev, &["drain", "n1:0000:05:00.0"]);
    let again = cli(&dev, &["drain", "n1:0000:05:00.0"]);
    let undrained = cli(&dev, &["undrain", "n1:0000:05:00.0"]);
    let out = cli(
        &dev,
        &[
            "borrow", "--class", "nvme", "--host", "n3", "--output", "json",
        ],
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let workflow = json[0]["workflow"]
        .as_u64()
        .expect("workflow id")
        .to_string();
    let shown = cli(&dev, &["workflow", "show", &workflow]);
    let journal: serde_json::Value = serde_json::from_slice(&shown.stdout).expect("journal json");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let metrics = agent
        .get(&format!("{}/metrics", dev.url))
        .call()
        .expect("served")
        .body_mut()
        .read_to_string()
        .expect("text");
    assert_eq!(
        (
            String::from_utf8_lossy(&drained.stdout).contains("maintenance"),
            String::from_utf8_lossy(&again.stderr).contains("ILLEGAL_TRANSITION"),
            String::from_utf8_lossy(&undrained.stdout).contains("available"),
            journal["outcome"]["outcome"].as_str(),
            metrics.contains("pcipool_leases{model=\"lend\"} 1"),
            metrics.contains("pcipool_refusals_total{code=\"ILLEGAL_TRANSITION\"} 1"),
            metrics.contains(
                "pcipool_workflow_duration_seconds_count{kind=\"lend\",outcome=\"succeeded\"} 1"
            ),
            metrics.contains("pcipool_devices{state=\"lent\"} 1"),
        ),
        (true, true, true, Some("succeeded"), true, true, true, true),
        "{metrics}"
    );
    // Prometheus's own checker accepts the exposition (Debian's prometheus package ships promtool;
    // the test command installs it).
    match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .expect("piped")
                .write_all(metrics.as_bytes())
                .expect("written");
            let out = child.wait_with_output().expect("promtool ran");
            assert!(
                out.status.success(),
                "promtool check metrics: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(e) => {
            pcipool_testkit::skip::skipped("promtool_check_metrics", &format!("no promtool: {e}"))
        }
    }
}

#[test]
fn host_list_and_audit_list() {
    let dev = start();
    let hosts = cli(&dev, &["host", "list", "--output", "json"]);
    let hosts: serde_json::Value = serde_json::from_slice(&hosts.stdout).expect("json");
    let audit = cli(&dev, &["audit", "list", "--limit", "3", "--output", "json"]);
    let audit: serde_json::Value = serde_json::from_slice(&audit.stdout).expect("json");
    assert_eq!(
        (
            hosts.as_array().map(Vec::len),
            audit.as_array().map(Vec::len),
            audit[0]["action"].as_str()
        ),
        (Some(4), Some(3), Some("register"))
    );
}

#[test]
fn a_borrow_that_does_not_wait_is_followed_through_its_workflow() {
    let dev = start();
    let out = cli(
        &dev,
        &[
            "borrow",
            "--class",
            "nvme",
            "--host",
            "n3",
            "--no-wait",
            "--output",
            "json",
        ],
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let workflow = json[0]["workflow"].as_u64().expect("workflow id");
    let fdid = json[0]["fdid"].as_str().expect("fdid").to_owned();
    let shown = cli(
        &dev,
        &["workflow", "show", &workflow.to_string(), "--wait", "10"],
    );
    let journal: serde_json::Value = serde_json::from_slice(&shown.stdout).expect("journal");
    let devices = cli(&dev, &["device", "show", &fdid, "--output", "json"]);
    let device: serde_json::Value = serde_json::from_slice(&devices.stdout).expect("device");
    assert_eq!(
        (
            out.status.code(),
            journal["outcome"]["outcome"].as_str(),
            device["state"].as_str()
        ),
        (Some(0), Some("succeeded"), Some("lent"))
    );
}

#[test]
fn draining_a_host_drains_its_idle_devices_and_reports_the_busy_ones() {
    let dev = start();
    let out = cli(
        &dev,
        &[
            "borrow",
            "--device",
            "n1:0000:03:00.0",
            "--host",
            "n3",
            "--output",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    let drained = cli(&dev, &["drain", "n1"]);
    let text = String::from_utf8_lossy(&drained.stdout).to_string();
    let undrained = cli(&dev, &["undrain", "n1"]);
    let list = cli(&dev, &["device", "list", "--output", "json"]);
    let devices: serde_json::Value = serde_json::from_slice(&list.stdout).expect("json");
    let states: Vec<(String, String)> = devices
        .as_array()
        .expect("list")
        .iter()
        .filter(|d| d["fdid"].as_str().is_some_and(|f| f.starts_with("n1:")))
        .map(|d| {
            (
                d["fdid"].as_str().unwrap_or_default().to_owned(),
                d["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        (
            drained.status.code(),
            text.contains("n1:0000:04:00.0 is now maintenance"),
            text.contains("n1:0000:03:00.0 stays lent"),
            // The lent drive was never drained, so undraining the host reports it too.
            undrained.status.code(),
            states,
        ),
        (
            Some(1),
            true,
            true,
            Some(1),
            vec![
                ("n1:0000:03:00.0".into(), "lent".into()),
                ("n1:0000:04:00.0".into(), "available".into()),
                ("n1:0000:05:00.0".into(), "available".into()),
            ]
        ),
        "{text}"
    );
}

/// An application on `host` of the dev lab (the lab serves the data path on the API's address).
fn app(dev: &Dev, host: &str) -> pcipool_access::Pool {
    pcipool_access::Pool::connect(&pcipool_access::Config {
        controller: dev.url.clone(),
        fabric: dev.url.clone(),
        token: dev.token.clone(),
        host: host.into(),
        lease_secs: None,
    })
    .expect("connect")
}

/// What a driver over a borrow holds: the driver (BAR window, queues in its segment), and the segment
/// and its DMA mapping, which must live as long as it does.
type Session = (
    pcipool_sim_datapath::driver::Driver<pcipool_access::BarMap>,
    pcipool_access::Segment,
    pcipool_access::DmaMapping,
);

/// Maps the BAR and a segment of `borrow`, enables the device and creates I/O queue pair 1 (raising
/// `vector` per completion, if any).
fn driver(
    pool: &pcipool_access::Pool,
    borrow: &pcipool_access::Borrow,
    vector: Option<u16>,
) -> Session {
    use pcipool_sim_datapath::driver::{Driver, layout};
    let seg = pool.segment("drv", layout::SEGMENT).expect("segment");
    let dma = borrow.map_for_dma(&seg).expect("DMA");
    let base = dma.device_addr();
    let mut d = Driver::new(
        borrow.map_bar().expect("BAR"),
        seg.reopen().expect("segment"),
        base,
        1,
    );
    d.enable().expect("enable");
    d.create_io_queues_with(1, base, vector).expect("queues");
    (d, seg, dma)
}

/// The embedded default serves the data path too: an application shares one of the lab's NVMe drives
/// through `pcipool-access`, with the controller's address as the fabric's.
#[test]
fn the_dev_lab_serves_shared_access_on_its_own_address() {
    use pcipool_access::{Filter, Mode};

    let dev = start();
    let pool = app(&dev, "n3");
    let drives = pool
        .find(&Filter {
            on_data_path: true,
            ..Filter::default()
        })
        .expect("find");
    let borrow = pool
        .borrow(&drives[0].fdid.to_string(), Mode::Shared { max_sharers: 2 })
        .expect("borrow");
    let bar = borrow.map_bar().expect("BAR");
    // CAP's low word: MQES 1023, contiguous queues required.
    let cap = bar.read32(0).expect("CAP");
    borrow.give_back().expect("give back");
    let after = bar.read32(0).expect("CAP");
    assert_eq!((drives.len(), cap & 0xffff, after), (2, 1023, u32::MAX));
}

/// Through the embedded default: the device's completion interrupts reach the application, device
/// memory near the device is where the device's DMA lands, and dropping the borrow (no explicit
/// return) unmaps everything and releases the lease.
#[test]
fn interrupts_and_device_memory_reach_the_application_and_dropping_the_borrow_returns_it() {
    use std::time::Duration;

    use pcipool_access::{Mode, Placement};
    use pcipool_sim_datapath::driver::layout;

    let dev = start();
    let pool = app(&dev, "n4");
    let fdid = crate::support::first_data_path_device(&pool);
    let borrow = pool.borrow(&fdid, Mode::Exclusive).expect("borrow");
    let mut irq = borrow.interrupt(3).expect("interrupt");
    let memory = borrow
        .device_memory(4096, Placement::NearDevice)
        .expect("device memory");
    let (mut d, seg, dma) = driver(&pool, &borrow, Some(3));
    d.seg.write(layout::DATA, &[0xab; 512]).expect("buffer");
    d.write(7, 1, 0).expect("write");
    let first = irq
        .wait(Duration::from_secs(5))
        .expect("interrupt after the write");
    // Read the block straight into device memory: the device's DMA lands next to the device.
    d.read_to(7, 1, memory.device_addr())
        .expect("read into device memory");
    let second = irq
        .wait(Duration::from_secs(5))
        .expect("interrupt after the read");
    let mut landed = [0u8; 512];
    memory.read(0, &mut landed).expect("device memory");
    let lease = borrow.lease();
    drop((d, seg, irq, memory, dma, borrow));
    let admin = pcipool_client::Client::new(&dev.url, &dev.token);
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while admin
        .leases()
        .is_ok_and(|l| l.iter().any(|l| l.lease_id.0 == lease))
        && std::time::Instant::now() < until
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let events: serde_json::Value = ureq::get(&format!("{}/v1/datapath/events", dev.url))
        .call()
        .expect("events")
        .body_mut()
        .read_json()
        .expect("json");
    let still_held = admin
        .leases()
        .expect("leases")
        .iter()
        .any(|l| l.lease_id.0 == lease);
    assert_eq!(
        (
            first,
            second,
            landed == [0xab; 512],
            still_held,
            events["mapped"].as_array().map(Vec::len)
        ),
        (1, 1, true, false, Some(0))
    );
}

/// Peer-to-peer: n4 borrows the drive and points its reads at a segment n3 exported; the data lands in
/// n3's memory, which n4 never mapped.
#[test]
fn a_device_writes_into_a_peers_exported_segment() {
    use pcipool_access::Mode;
    use pcipool_sim_datapath::driver::layout;

    let dev = start();
    let (n4, n3) = (app(&dev, "n4"), app(&dev, "n3"));
    let results = n3.segment("results", 4096).expect("peer segment");
    let fdid = crate::support::first_data_path_device(&n4);
    let borrow = n4.borrow(&fdid, Mode::Exclusive).expect("borrow");
    let before_export = borrow
        .map_peer_for_dma("n3", "results")
        .map(|m| m.device_addr())
        .map_err(|e| e.code().map(str::to_owned));
    results.export().expect("export");
    let peer = borrow
        .map_peer_for_dma("n3", "results")
        .expect("peer mapping");
    let (mut d, _seg, _dma) = driver(&n4, &borrow, None);
    d.seg.write(layout::DATA, &[0x3c; 512]).expect("buffer");
    d.write(11, 1, 0).expect("write");
    d.read_to(11, 1, peer.device_addr())
        .expect("read into the peer's memory");
    let mut landed = [0u8; 512];
    results
        .memory()
        .read(0, &mut landed)
        .expect("peer reads its own memory");
    assert_eq!(
        (before_export, landed == [0x3c; 512]),
        (Err(Some("FORBIDDEN".to_owned())), true)
    );
}

/// Bad input to the data path is refused with a status and a stable code, and changes nothing.
#[test]
fn the_data_path_refuses_bad_input_with_clear_errors() {
    let dev = start();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let post = |path: &str, body: &str| {
        let mut resp = agent
            .post(&format!("{}{path}", dev.url))
            .header("authorization", &format!("Bearer {}", dev.token))
            .header("content-type", "application/json")
            .send(body)
            .expect("answers");
        let status = resp.status().as_u16();
        let v: serde_json::Value = resp.body_mut().read_json().unwrap_or_default();
        (status, v["code"].as_str().unwrap_or_default().to_owned())
    };
    let answers = vec![
        post("/v1/datapath/segments", "{not json"),
        post(
            "/v1/datapath/segments",
            r#"{"host":"n3","name":"../../etc","size":4096}"#,
        ),
        post(
            "/v1/datapath/segments",
            r#"{"host":"n3","name":"big","size":99999999999}"#,
        ),
        post(
            "/v1/datapath/segments",
            r#"{"host":"n3","name":"x","size":4096,"extra":1}"#,
        ),
        post(
            "/v1/datapath/exports",
            r#"{"host":"n3","name":"never-made"}"#,
        ),
        post(
            "/v1/datapath/leases/999/bar",
            r#"{"fdid":"n1:0000:03:00.0","host":"n3"}"#,
        ),
    ];
    let events: serde_json::Value = ureq::get(&format!("{}/v1/datapath/events", dev.url))
        .call()
        .expect("events")
        .body_mut()
        .read_json()
        .expect("json");
    let code = |s: &str| s.to_owned();
    assert_eq!(
        (answers, events["mapped"].as_array().map(Vec::len)),
        (
            vec![
                (400, code("BAD_REQUEST")),
                (400, code("BAD_REQUEST")),
                (400, code("BAD_REQUEST")),
                (400, code("BAD_REQUEST")),
                (404, code("NO_SUCH_SEGMENT")),
                (403, code("NOT_YOUR_LEASE")),
            ],
            Some(0)
        )
    );
}

/// The operator's side of shared access on the command line: an exclusive shared borrow keeps others
/// out until `lease downgrade`; `lease renew` keeps a lease alive and refuses one that does not exist.
#[test]
fn lease_downgrade_and_renew_from_the_command_line() {
    let dev = start();
    let borrow = |host: &str, sharers: &str| {
        let out = cli(
            &dev,
            &[
                "borrow",
                "--device",
                "n1:0000:03:00.0",
                "--host",
                host,
                "--model",
                "shared",
                "--max-sharers",
                sharers,
                "--output",
                "json",
            ],
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        (out.status.code(), json[0]["lease_id"].as_u64())
    };
    let (first, lease) = borrow("n3", "1");
    let lease = lease.expect("an exclusive lease").to_string();
    let (while_exclusive, _) = borrow("n4", "4");
    let downgraded = cli(&dev, &["lease", "downgrade", &lease, "--max-sharers", "4"])
        .status
        .code();
    let (after, _) = borrow("n4", "4");
    let renewed = cli(&dev, &["lease", "renew", &lease]);
    let missing = cli(&dev, &["lease", "renew", "999"]).status.code();
    assert_eq!(
        (
            first,
            while_exclusive == Some(0),
            downgraded,
            after,
            renewed.status.code(),
            String::from_utf8_lossy(&renewed.stdout).contains("renewed"),
            missing
        ),
        (Some(0), false, Some(0), Some(0), Some(0), true, Some(4))
    );
}

/// Records from outside the controller (the fabric's teardown reports) are for operators only and of a
/// plain shape; what is accepted joins the hash chain.
#[test]
fn outside_audit_records_are_for_operators_and_join_the_chain() {
    let dev = start();
    let admin = pcipool_client::Client::new(&dev.url, &dev.token);
    let ok = admin.record("lease 7", "datapath_teardown", "returned by its holder");
    let bad_action = admin
        .record("lease 7", "Drop Table", "x")
        .map_err(|e| e.to_string());
    let listed =
        admin.audit(1, 10_000).expect("audit").iter().any(|r| {
            r.action == "datapath_teardown" && r.target == "lease 7" && r.actor == "admin"
        });
    let intact = admin.audit_verify().expect("verify").ok;
    assert_eq!(
        (
            ok.is_ok(),
            bad_action.is_err_and(|e| e.contains("BAD_REQUEST")),
            listed,
            intact
        ),
        (true, true, true, true)
    );
}

#[test]
fn the_event_stream_announces_a_change_and_does_not_hold_up_a_sigterm() {
    use std::io::{Read as _, Write as _};
    let mut dev = start();
    let addr = dev.url.trim_start_matches("http://").to_owned();
    let mut events = std::net::TcpStream::connect(&addr).expect("connects");
    events
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout set");
    write!(
        events,
        "GET /v1/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .expect("request sent");
    let drained = cli(&dev, &["drain", "n1:0000:05:00.0"]);
    // Read until the change event arrives (or the timeout says it did not).
    let mut seen = String::new();
    let mut buf = [0u8; 1024];
    while !seen.contains("event: change") {
        match events.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    // SIGTERM with the stream still open: the server ends it and exits.
    let status = Command::new("kill")
        .args(["-TERM", &dev.child.id().to_string()])
        .status()
        .expect("kill runs");
    let asked = std::time::Instant::now();
    let mut exited = None;
    while asked.elapsed() < std::time::Duration::from_secs(10) {
        if let Ok(Some(code)) = dev.child.try_wait() {
            exited = Some(code.success());
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        (
            drained.status.success(),
            seen.contains("text/event-stream"),
            seen.contains("event: change"),
            status.success(),
            exited,
        ),
        (true, true, true, true, Some(true)),
        "{seen}"
    );
}
