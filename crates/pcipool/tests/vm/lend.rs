//! Device Lending across real kernels, through the whole system: the controller (SQLite store, HTTP
//! API) and the QEMU fabric manager on this machine, a Linux agent inside each guest reaching the
//! controller through QEMU's restricted user network (`pcipool relay`). A borrow lends the lender's
//! NVMe drive to the borrower's kernel, where the native `nvme` driver binds and the lender's data is
//! there; a release while a program on the borrower has the drive open is refused as busy; the release
//! brings it home, where the lender reads what the borrower wrote, and only the lender's QEMU holds
//! the image. A borrower killed while it holds the drive stops renewing its lease; the lease expires and
//! is fenced, and the drive goes home with what the borrower wrote before it died.

use std::time::{Duration, Instant};

use pcipool_fabric::{Fdid, NodeId};
use pcipool_fabric_qemu::{Drive, Guest as FabricGuest, QemuFabric};
use pcipool_vm::vm::{GUEST_NET, Spec};

use crate::guest::{Guest, Room, boot_in, image};

const AT: &str = "0000:01:00.0";

/// The lab's fabric for placement: `hosts` hosts on one switch (the hypervisor).
fn lab_file(hosts: u32) -> String {
    let mut text = String::from("[[switch]]\nname = \"hypervisor\"\n");
    for n in 1..=hosts {
        text.push_str(&format!(
            "\n[[host]]\nname = \"n{n}\"\nnode = {n}\nadapters = [\"dolphin-pxh830-32g\"]\nlinks = [\"switch:hypervisor\"]\n"
        ));
    }
    text
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The NVMe namespace at 01:00.0 once the kernel has it, and its first 12 bytes.
fn wait_for_drive(g: &mut Guest) -> String {
    wait_for_drive_at(g, AT)
}

/// The NVMe namespace of the controller at `at` once the kernel has it, and its first 12 bytes.
fn wait_for_drive_at(g: &mut Guest, at: &str) -> String {
    g.ok(&format!(
        "for i in $(seq 600); do b=$(ls /sys/bus/pci/devices/{at}/nvme/*/ 2>/dev/null | grep -m1 '^nvme[0-9]*n1$'); [ -n \"$b\" ] && [ -e /dev/$b ] && break; sleep 0.1; done; echo $b $(dd if=/dev/$b bs=12 count=1 2>/dev/null)"
    ))
}

fn marker(answer: &str) -> Option<String> {
    answer.split_whitespace().nth(1).map(str::to_owned)
}

fn start_agent(g: &mut Guest, node: &str, lends: &str, token: &str, host_port: u16) {
    g.ok(GUEST_NET);
    g.ok(&format!(
        "PCIPOOL_LOG=info pcipool agent --node {node} --backend linux {lends} --url http://10.0.2.100:7070 --token {token} --listen 0.0.0.0:7171 --advertise http://127.0.0.1:{host_port} --state-dir /tmp/agent --heartbeat-ms 500 > /tmp/agent.log 2>&1 &"
    ));
}

/// `pcipool server` as a process, which a test may SIGKILL and start again on the same store.
struct ControllerProcess {
    args: Vec<String>,
    child: Option<std::process::Child>,
}

impl ControllerProcess {
    /// Starts it and waits for its banner (it listens from then on).
    fn started(mut self) -> Self {
        use std::io::{BufRead, BufReader};
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pcipool"))
            .args(&self.args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("pcipool server starts");
        let stdout = child.stdout.take().expect("piped");
        let mut lines = BufReader::new(stdout).lines();
        let up = lines
            .by_ref()
            .map_while(Result::ok)
            .any(|l| l.contains("controller at http://"));
        assert!(up, "pcipool server did not start");
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
        self.child = Some(child);
        self
    }

    /// SIGKILL.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Lender guests (n1.. each lending one drive), one borrower guest (the next node), the fabric manager
/// and the controller.
struct Lab {
    lender: Guest,
    more_lenders: Vec<Guest>,
    borrower: Guest,
    borrower_node: NodeId,
    more_drives: Vec<Fdid>,
    client: pcipool_client::Client,
    /// Asks the guests where the drive is.
    fabric: QemuFabric,
    drive: Fdid,
    /// Runs the fabric manager for as long as the lab lives.
    _runtime: tokio::runtime::Runtime,
    stop: Vec<tokio::sync::oneshot::Sender<()>>,
    controller: ControllerProcess,
    _files: tempfile::TempDir,
    /// Dropped last: the guests are gone before another test may start its own.
    _room: Room,
}

impl Lab {
    fn up(test: &str, agent_timeout: Duration) -> Option<Self> {
        Self::with_lenders(test, agent_timeout, 1)
    }

    fn with_lenders(test: &str, agent_timeout: Duration, lenders: u32) -> Option<Self> {
        let room = crate::guest::room(lenders + 1);
        let files = tempfile::tempdir().expect("tempdir");
        let images: Vec<std::path::PathBuf> = (0..lenders)
            .map(|i| {
                let marker = if i == 0 {
                    "marker-x....".to_owned()
                } else {
                    format!("marker-{i}....")
                };
                image(files.path(), &format!("x{i}.img"), 64, &marker)
            })
            .collect();
        let controller_port = free_port();
        let ports: Vec<u16> = (0..=lenders).map(|_| free_port()).collect();
        let relay = format!(
            "{} relay 127.0.0.1:{controller_port}",
            env!("CARGO_BIN_EXE_pcipool")
        );
        let mut guests: Vec<Option<Guest>> = std::thread::scope(|s| {
            let boots: Vec<_> = (0..=lenders)
                .map(|i| {
                    let (relay, images, port, room) = (&relay, &images, ports[i as usize], &room);
                    s.spawn(move || {
                        let role = if i == lenders {
                            "borrower".to_owned()
                        } else {
                            format!("lender{i}")
                        };
                        boot_in(Some(room), &format!("{test}_{role}"), |_| {
                            let spec =
                                Spec::new(4).forwarded_nic(4, "10.0.2.100:7070", relay, port, 7171);
                            match images.get(i as usize) {
                                Some(img) => spec.nvme(&format!("x{i}"), img, 1),
                                None => spec,
                            }
                        })
                    })
                })
                .collect();
            boots.into_iter().map(|b| b.join().expect("boot")).collect()
        });
        if guests.iter().any(Option::is_none) {
            return None;
        }
        let mut borrower = guests.pop().flatten()?;
        let mut lender_guests: Vec<Guest> = guests.into_iter().flatten().collect();
        let borrower_node = NodeId(lenders + 1);
        let drives: Vec<Fdid> = (1..=lenders)
            .map(|n| Fdid {
                node: NodeId(n),
                bdf: AT.parse().expect("address"),
                vf: None,
            })
            .collect();
        let slots = |ports: &[&str]| ports.iter().map(|p| (*p).to_owned()).collect();
        let mut fabric_guests: Vec<FabricGuest> = lender_guests
            .iter()
            .enumerate()
            .map(|(i, g)| FabricGuest {
                node: drives[i].node,
                qmp: g.vm.dir.join("qmp.sock"),
                free_slots: slots(&["rp2", "rp3"]),
            })
            .collect();
        fabric_guests.push(FabricGuest {
            node: borrower_node,
            qmp: borrower.vm.dir.join("qmp.sock"),
            free_slots: slots(&["rp1", "rp2", "rp3"]),
        });
        let fabric = QemuFabric::new(
            fabric_guests,
            drives
                .iter()
                .zip(&images)
                .enumerate()
                .map(|(i, (fdid, img))| Drive {
                    fdid: *fdid,
                    image: img.clone(),
                    serial: format!("x{i}"),
                    home_slot: "rp1".into(),
                })
                .collect(),
        );
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let fabric_url = format!("http://{}", listener.local_addr().expect("address"));
        let (stop_fabric, fabric_stopped) = tokio::sync::oneshot::channel::<()>();
        let manager = std::sync::Arc::new(std::sync::Mutex::new(fabric.clone()));
        runtime.spawn(pcipool_agent::fabric_manager::serve(
            manager,
            listener,
            async {
                let _ = fabric_stopped.await;
            },
        ));
        let lab = files.path().join("lab.toml");
        std::fs::write(&lab, lab_file(lenders + 1)).expect("lab file");
        let data = files.path().join("controller");
        let controller = ControllerProcess {
            args: vec![
                "server".into(),
                "--data-dir".into(),
                data.display().to_string(),
                "--fabric".into(),
                lab.display().to_string(),
                "--fabric-url".into(),
                fabric_url,
                "--fabric-attachment".into(),
                "whole-device".into(),
                "--agent-timeout".into(),
                agent_timeout.as_secs().to_string(),
                "--listen".into(),
                format!("127.0.0.1:{controller_port}"),
            ],
            child: None,
        }
        .started();
        let token = |name: &str| {
            std::fs::read_to_string(data.join(name))
                .expect("token")
                .trim()
                .to_owned()
        };
        let (admin, agent_token) = (token("admin.token"), token("agent.token"));
        let client =
            pcipool_client::Client::new(&format!("http://127.0.0.1:{controller_port}"), &admin);
        for (i, g) in lender_guests.iter_mut().enumerate() {
            let node = drives[i].node;
            start_agent(
                g,
                &node.to_string(),
                &format!("--pool {AT}"),
                &agent_token,
                ports[i],
            );
        }
        start_agent(
            &mut borrower,
            &borrower_node.to_string(),
            "--borrower-only",
            &agent_token,
            ports[lenders as usize],
        );
        let registered = Instant::now();
        let hosts_wanted = lenders as usize + 1;
        let offered = loop {
            let devices = client.devices().unwrap_or_default();
            let up = client
                .hosts()
                .unwrap_or_default()
                .iter()
                .filter(|h| h.agent == "up")
                .count();
            let all = drives.iter().all(|f| devices.iter().any(|d| d.fdid == *f));
            if (all && up == hosts_wanted) || registered.elapsed() > Duration::from_secs(90) {
                break all && up == hosts_wanted;
            }
            std::thread::sleep(Duration::from_millis(250));
        };
        let log = lender_guests[0].sh("cat /tmp/agent.log").output;
        assert!(offered, "the agents did not register:\n{log}");
        let lender = lender_guests.remove(0);
        Some(Self {
            lender,
            more_lenders: lender_guests,
            borrower,
            borrower_node,
            more_drives: drives[1..].to_vec(),
            client,
            fabric,
            drive: drives[0],
            _runtime: runtime,
            stop: vec![stop_fabric],
            controller,
            _files: files,
            _room: room,
        })
    }

    fn borrow(&mut self, duration_secs: Option<u64>) -> pcipool_wire::Granted {
        self.borrow_many(1, duration_secs).remove(0)
    }

    fn borrow_many(
        &mut self,
        count: u32,
        duration_secs: Option<u64>,
    ) -> Vec<pcipool_wire::Granted> {
        let granted = self.client.borrow(&pcipool_wire::BorrowRequest {
            selector: pcipool_pool::schedule::Selector {
                class: Some(pcipool_pool::schedule::DeviceClass::Nvme),
                ..Default::default()
            },
            count,
            model: pcipool_qualify::AccessModel::Lend,
            borrower: self.borrower_node,
            duration_secs,
            max_sharers: None,
            request_id: None,
            wait: true,
        });
        match granted {
            Ok(g) => g,
            Err(e) => panic!(
                "borrow: {e}\nlender agent:\n{}\nborrower agent:\n{}",
                self.lender.sh("cat /tmp/agent.log").output,
                self.borrower.sh("cat /tmp/agent.log").output
            ),
        }
    }
}

impl Lab {
    /// What the controller says of `fdid` ("" when it does not know it).
    fn state_of(&self, fdid: Fdid) -> String {
        self.client
            .devices()
            .unwrap_or_default()
            .into_iter()
            .find(|d| d.fdid == fdid)
            .map(|d| d.state)
            .unwrap_or_default()
    }

    /// Fails the test with what the controller and the agents say.
    fn diagnose(&mut self, what: &str) -> ! {
        let audit: Vec<String> = self
            .client
            .audit(0, 1000)
            .unwrap_or_default()
            .into_iter()
            .map(|r| format!("{} {} {}", r.action, r.target, r.result))
            .collect();
        panic!(
            "{what}\naudit:\n{}\nlender agent:\n{}\nborrower agent:\n{}",
            audit.join("\n"),
            self.lender.sh("cat /tmp/agent.log").output,
            self.borrower.sh("cat /tmp/agent.log").output
        );
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for stop in self.stop.drain(..) {
            let _ = stop.send(());
        }
        self.controller.kill();
    }
}

#[test]
fn a_borrow_lends_an_nvme_drive_to_another_kernel_and_the_release_brings_it_home() {
    let Some(mut lab) = Lab::up("lend", Duration::from_secs(30)) else {
        return;
    };
    let started = Instant::now();
    let granted = lab.borrow(None);
    let lent_in = started.elapsed();
    let on_borrower = wait_for_drive(&mut lab.borrower);
    let usable_in = started.elapsed();
    lab.borrower.ok(&format!("b=$(ls /sys/bus/pci/devices/{AT}/nvme/*/ | grep -m1 '^nvme[0-9]*n1$'); printf 'from-n2.....' | dd of=/dev/$b bs=12 count=1 conv=notrunc 2>/dev/null; sync"));

    // A program on the borrower still has the drive open: the release is refused, nothing forced.
    lab.borrower.ok(&format!("b=$(ls /sys/bus/pci/devices/{AT}/nvme/*/ | grep -m1 '^nvme[0-9]*n1$'); sleep 600 < /dev/$b > /dev/null 2>&1 & echo $! > /tmp/holder"));
    let busy = lab.client.release(granted.lease_id.0).map_err(|e| e.code());
    let still_there = wait_for_drive(&mut lab.borrower);
    lab.borrower.ok("kill $(cat /tmp/holder) && sleep 0.2");

    // Release: home to n1's kernel with what n2 wrote.
    let started = Instant::now();
    let released = lab.client.release(granted.lease_id.0);
    let state = settled_state(&lab, Duration::from_secs(90));
    if state != "available" {
        lab.diagnose(&format!("after the release the drive is {state}"));
    }
    let on_lender = wait_for_drive(&mut lab.lender);
    let home_in = started.elapsed();
    let lender_driver = lab.lender.ok(&format!(
        "basename $(readlink /sys/bus/pci/devices/{AT}/driver)"
    ));
    let borrower_has_it = lab
        .borrower
        .sh(&format!("test -e /sys/bus/pci/devices/{AT}"))
        .status
        == 0;
    let verify = lab.client.audit_verify().map(|v| v.ok);
    let holder = lab.fabric.holder(lab.drive).map_err(|e| e.to_string());
    let steps: Vec<String> = lab
        .client
        .audit(0, 1000)
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.action)
        .collect();
    eprintln!(
        "lend: borrow answered in {:.2} s, block device usable on the borrower {:.2} s after the request; release: usable on the lender {:.2} s after the request",
        lent_in.as_secs_f64(),
        usable_in.as_secs_f64(),
        home_in.as_secs_f64()
    );
    assert_eq!(
        (
            marker(&on_borrower),
            busy,
            marker(&still_there),
            released.map_err(|e| e.to_string()),
            marker(&on_lender),
            lender_driver,
            borrower_has_it,
            verify.map_err(|e| e.to_string()),
            holder,
        ),
        (
            Some("marker-x....".to_owned()),
            Err(Some(pcipool_wire::ErrorCode::Busy)),
            Some("from-n2.....".to_owned()),
            Ok(()),
            Some("from-n2.....".to_owned()),
            "nvme".to_owned(),
            false,
            Ok(true),
            Ok(Some(NodeId(1))),
        ),
        "audit: {steps:?}"
    );
}

#[test]
fn a_borrower_killed_while_it_holds_the_drive_loses_the_lease_and_the_drive_goes_home() {
    let Some(mut lab) = Lab::up("killed", Duration::from_secs(3)) else {
        return;
    };
    // A 10 s lease, renewed by the borrower's agent while it lives.
    let granted = lab.borrow(Some(10));
    let on_borrower = wait_for_drive(&mut lab.borrower);
    // Outlives its first term: the heartbeats renew it.
    std::thread::sleep(Duration::from_secs(12));
    let renewed = lab
        .client
        .leases()
        .unwrap_or_default()
        .iter()
        .any(|l| l.lease_id == granted.lease_id);
    lab.borrower.ok(&format!("b=$(ls /sys/bus/pci/devices/{AT}/nvme/*/ | grep -m1 '^nvme[0-9]*n1$'); printf 'last-words..' | dd of=/dev/$b bs=12 count=1 conv=notrunc 2>/dev/null; sync"));
    let killed = Instant::now();
    lab.borrower.vm.kill();
    // Its heartbeats stop: the lease expires, is fenced, and the return runs without the borrower.
    let mut states = Vec::new();
    while killed.elapsed() < Duration::from_secs(120) {
        let state = lab.state_of(lab.drive);
        if states.last() != Some(&state) {
            states.push(state.clone());
        }
        if state == "available" {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    if states.last().map(String::as_str) != Some("available") {
        lab.diagnose(&format!("the drive did not come home: states {states:?}"));
    }
    let on_lender = wait_for_drive(&mut lab.lender);
    let home_in = killed.elapsed();
    let leases = lab.client.leases().unwrap_or_default();
    let device = lab.state_of(lab.drive);
    eprintln!(
        "killed: the drive was usable on its lender {:.2} s after the borrower's QEMU was killed",
        home_in.as_secs_f64()
    );
    assert_eq!(
        (
            renewed,
            marker(&on_borrower),
            marker(&on_lender),
            leases.iter().any(|l| l.lease_id == granted.lease_id),
            device.as_str(),
            lab.fabric.holder(lab.drive).map_err(|e| e.to_string()),
            lab.client
                .audit_verify()
                .map(|v| v.ok)
                .map_err(|e| e.to_string())
        ),
        (
            true,
            Some("marker-x....".to_owned()),
            Some("last-words..".to_owned()),
            false,
            "available",
            Ok(Some(NodeId(1))),
            Ok(true)
        )
    );
}

/// The drive's state once no workflow runs on it (or what it was at the deadline).
fn settled_state(lab: &Lab, within: Duration) -> String {
    let started = Instant::now();
    loop {
        let state = lab.state_of(lab.drive);
        if matches!(state.as_str(), "available" | "lent") || started.elapsed() > within {
            return state;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn a_controller_killed_mid_lend_resumes_its_journal_and_the_drive_ends_in_one_kernel() {
    let Some(mut lab) = Lab::up("restart", Duration::from_secs(30)) else {
        return;
    };
    // The lend runs in the controller's worker; the controller dies in the middle of it.
    let asked = lab.client.borrow(&pcipool_wire::BorrowRequest {
        selector: pcipool_pool::schedule::Selector {
            class: Some(pcipool_pool::schedule::DeviceClass::Nvme),
            ..Default::default()
        },
        count: 1,
        model: pcipool_qualify::AccessModel::Lend,
        borrower: lab.borrower_node,
        duration_secs: None,
        max_sharers: None,
        request_id: None,
        wait: false,
    });
    std::thread::sleep(Duration::from_millis(600));
    lab.controller.kill();
    let in_flight = lab.fabric.holder(lab.drive).map_err(|e| e.to_string());
    lab.controller = ControllerProcess {
        args: lab.controller.args.clone(),
        child: None,
    }
    .started();
    let state = settled_state(&lab, Duration::from_secs(90));
    let holder = lab.fabric.holder(lab.drive).map_err(|e| e.to_string());
    // Where the store says the drive is, the kernel has it, and only there.
    let (home, away) = match state.as_str() {
        "lent" => (&mut lab.borrower, &mut lab.lender),
        _ => (&mut lab.lender, &mut lab.borrower),
    };
    let there = wait_for_drive(home);
    let elsewhere = away
        .sh(&format!("test -e /sys/bus/pci/devices/{AT}/nvme"))
        .status
        == 0;
    eprintln!(
        "restart: the drive was with {in_flight:?} when the controller died; after the restart the store says {state}"
    );
    assert_eq!(
        (
            asked.map(|g| g.len()).map_err(|e| e.to_string()),
            matches!(state.as_str(), "available" | "lent"),
            holder,
            marker(&there),
            elsewhere,
            lab.client
                .audit_verify()
                .map(|v| v.ok)
                .map_err(|e| e.to_string())
        ),
        (
            Ok(1),
            true,
            Ok(Some(if state == "lent" {
                NodeId(2)
            } else {
                NodeId(1)
            })),
            Some("marker-x....".to_owned()),
            false,
            Ok(true)
        ),
        "state {state}"
    );
}

#[test]
fn a_gang_borrow_takes_a_drive_from_each_of_two_lenders_and_gives_both_back() {
    let Some(mut lab) = Lab::with_lenders("gang", Duration::from_secs(30), 2) else {
        return;
    };
    let granted = lab.borrow_many(2, None);
    let mut lenders: Vec<u32> = granted.iter().map(|g| g.fdid.node.0).collect();
    lenders.sort_unstable();
    // The borrower's two free slots (root ports 1 and 2) give buses 1 and 2.
    let mut seen = vec![
        marker(&wait_for_drive_at(&mut lab.borrower, "0000:01:00.0")),
        marker(&wait_for_drive_at(&mut lab.borrower, "0000:02:00.0")),
    ];
    seen.sort();
    let released: Vec<Result<(), String>> = granted
        .iter()
        .map(|g| lab.client.release(g.lease_id.0).map_err(|e| e.to_string()))
        .collect();
    let both = [lab.drive, lab.more_drives[0]];
    let started = Instant::now();
    let states = loop {
        let states: Vec<String> = both.iter().map(|f| lab.state_of(*f)).collect();
        if states.iter().all(|s| s == "available") || started.elapsed() > Duration::from_secs(120) {
            break states;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    if states.iter().any(|s| s != "available") {
        lab.diagnose(&format!("after the releases the drives are {states:?}"));
    }
    let home = (
        marker(&wait_for_drive(&mut lab.lender)),
        marker(&wait_for_drive(&mut lab.more_lenders[0])),
    );
    let holders = (
        lab.fabric.holder(lab.drive).map_err(|e| e.to_string()),
        lab.fabric
            .holder(lab.more_drives[0])
            .map_err(|e| e.to_string()),
    );
    assert_eq!(
        (lenders, seen, released, home, holders),
        (
            vec![1, 2],
            vec![
                Some("marker-1....".to_owned()),
                Some("marker-x....".to_owned())
            ],
            vec![Ok(()), Ok(())],
            (
                Some("marker-x....".to_owned()),
                Some("marker-1....".to_owned())
            ),
            (Ok(Some(NodeId(1))), Ok(Some(NodeId(2))))
        )
    );
}
