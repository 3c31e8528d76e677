//! Device Lending across real kernels, through the whole system: the controller (SQLite store, HTTP
//! API) and the QEMU fabric manager on this machine, a Linux agent inside each guest reaching the
//! controller through QEMU's restricted user network (`pcipool relay`). A borrow lends the lender's
//! NVMe drive to the borrower's kernel, where the native `nvme` driver binds and the lender's data is
//! there; a release while a program on the borrower has the drive open is refused as busy; the release
//! brings it home, where the lender reads what the borrower wrote, and only the lender's QEMU holds
//! the image.

use std::time::{Duration, Instant};

use pcipool_fabric::{Fdid, NodeId};
use pcipool_fabric_qemu::{Drive, Guest as FabricGuest, QemuFabric};
use pcipool_vm::vm::{GUEST_NET, Spec};

use crate::guest::{Guest, boot, image};

const AT: &str = "0000:01:00.0";

/// The lab's fabric for placement: two hosts on one switch (the hypervisor).
const LAB: &str = r#"
[[switch]]
name = "hypervisor"

[[host]]
name = "n1"
node = 1
adapters = ["dolphin-pxh830-32g"]
links = ["switch:hypervisor"]

[[host]]
name = "n2"
node = 2
adapters = ["dolphin-pxh830-32g"]
links = ["switch:hypervisor"]
"#;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn wait_for_drive(g: &mut Guest) -> String {
    g.ok(&format!(
        "for i in $(seq 300); do b=$(ls /sys/bus/pci/devices/{AT}/nvme/*/ 2>/dev/null | grep -m1 '^nvme[0-9]*n1$'); [ -n \"$b\" ] && [ -e /dev/$b ] && break; sleep 0.1; done; echo $b $(dd if=/dev/$b bs=12 count=1 2>/dev/null)"
    ))
}

fn start_agent(g: &mut Guest, node: &str, lends: &str, token: &str, host_port: u16) {
    g.ok(GUEST_NET);
    g.ok(&format!(
        "PCIPOOL_LOG=info pcipool agent --node {node} --backend linux {lends} --url http://10.0.2.100:7070 --token {token} --listen 0.0.0.0:7171 --advertise http://127.0.0.1:{host_port} --state-dir /tmp/agent > /tmp/agent.log 2>&1 &"
    ));
}

#[test]
fn a_borrow_lends_an_nvme_drive_to_another_kernel_and_the_release_brings_it_home() {
    let files = tempfile::tempdir().expect("tempdir");
    let img = image(files.path(), "x.img", 64, "marker-x....");
    let (controller_port, agent1, agent2) = (free_port(), free_port(), free_port());
    let relay = format!(
        "{} relay 127.0.0.1:{controller_port}",
        env!("CARGO_BIN_EXE_pcipool")
    );
    let (lender, borrower) = std::thread::scope(|s| {
        let a = s.spawn(|| {
            boot("lend_lender", |_| {
                Spec::new(4).nvme("x", &img, 1).forwarded_nic(
                    4,
                    "10.0.2.100:7070",
                    &relay,
                    agent1,
                    7171,
                )
            })
        });
        let b = s.spawn(|| {
            boot("lend_borrower", |_| {
                Spec::new(4).forwarded_nic(4, "10.0.2.100:7070", &relay, agent2, 7171)
            })
        });
        (
            a.join().expect("lender boot"),
            b.join().expect("borrower boot"),
        )
    });
    let (Some(mut a), Some(mut b)) = (lender, borrower) else {
        return;
    };
    let fdid = Fdid {
        node: NodeId(1),
        bdf: AT.parse().expect("address"),
        vf: None,
    };
    let slots = |ports: &[&str]| ports.iter().map(|p| (*p).to_owned()).collect();
    let fabric = QemuFabric::new(
        vec![
            FabricGuest {
                node: NodeId(1),
                qmp: a.vm.dir.join("qmp.sock"),
                free_slots: slots(&["rp2", "rp3"]),
            },
            FabricGuest {
                node: NodeId(2),
                qmp: b.vm.dir.join("qmp.sock"),
                free_slots: slots(&["rp1", "rp2", "rp3"]),
            },
        ],
        vec![Drive {
            fdid,
            image: img.clone(),
            serial: "x".into(),
            home_slot: "rp1".into(),
        }],
    );

    // The fabric manager and the controller, on loopback.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let fabric_url = format!("http://{}", listener.local_addr().expect("address"));
    let (stop_fabric, fabric_stopped) = tokio::sync::oneshot::channel::<()>();
    let checker = fabric.clone();
    let manager = std::sync::Arc::new(std::sync::Mutex::new(fabric));
    let fabric_server = runtime.spawn(pcipool_agent::fabric_manager::serve(
        manager,
        listener,
        async {
            let _ = fabric_stopped.await;
        },
    ));
    let lab = files.path().join("lab.toml");
    std::fs::write(&lab, LAB).expect("lab file");
    let data = files.path().join("controller");
    let server = pcipool_serve::server::open(&pcipool_serve::server::ServerConfig {
        data_dir: data.clone(),
        fabric: Some(lab),
        tokens: None,
        policy: None,
        agent_timeout: Duration::from_secs(30),
        fabric_url: Some(fabric_url),
        attachment: pcipool_backend::Attachment::WholeDevice,
    })
    .expect("controller");
    let (stop_controller, controller_stopped) = tokio::sync::oneshot::channel::<()>();
    let listen = format!("127.0.0.1:{controller_port}");
    let controller = std::thread::spawn(move || {
        server.serve(&listen, |_| {}, async {
            let _ = controller_stopped.await;
        })
    });
    let token = |name: &str| {
        std::fs::read_to_string(data.join(name))
            .expect("token")
            .trim()
            .to_owned()
    };
    let (admin, agent_token) = (token("admin.token"), token("agent.token"));
    let client =
        pcipool_client::Client::new(&format!("http://127.0.0.1:{controller_port}"), &admin);

    // One agent in each guest.
    start_agent(&mut a, "n1", &format!("--pool {AT}"), &agent_token, agent1);
    start_agent(&mut b, "n2", "--borrower-only", &agent_token, agent2);
    let registered = Instant::now();
    let offered = loop {
        let devices = client.devices().unwrap_or_default();
        if devices.iter().any(|d| d.fdid == fdid) || registered.elapsed() > Duration::from_secs(90)
        {
            break devices.iter().any(|d| d.fdid == fdid);
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let lender_log = a.sh("cat /tmp/agent.log").output;
    assert!(
        offered,
        "the lender's agent did not register its drive:\n{lender_log}"
    );

    // Borrow: lent to n2's kernel.
    let started = Instant::now();
    let granted = client.borrow(&pcipool_wire::BorrowRequest {
        selector: pcipool_pool::schedule::Selector {
            class: Some(pcipool_pool::schedule::DeviceClass::Nvme),
            ..Default::default()
        },
        count: 1,
        model: pcipool_qualify::AccessModel::Lend,
        borrower: NodeId(2),
        duration_secs: None,
        max_sharers: None,
        request_id: None,
        wait: true,
    });
    let lent_in = started.elapsed();
    let granted = match granted {
        Ok(g) => g,
        Err(e) => panic!(
            "borrow: {e}\nlender agent:\n{}\nborrower agent:\n{}",
            a.sh("cat /tmp/agent.log").output,
            b.sh("cat /tmp/agent.log").output
        ),
    };
    let on_borrower = wait_for_drive(&mut b);
    let usable_in = started.elapsed();
    b.ok(&format!("b=$(ls /sys/bus/pci/devices/{AT}/nvme/*/ | grep -m1 '^nvme[0-9]*n1$'); printf 'from-n2.....' | dd of=/dev/$b bs=12 count=1 conv=notrunc 2>/dev/null; sync"));

    // A program on the borrower still has the drive open: the release is refused, nothing forced.
    b.ok(&format!("b=$(ls /sys/bus/pci/devices/{AT}/nvme/*/ | grep -m1 '^nvme[0-9]*n1$'); sleep 600 < /dev/$b > /dev/null 2>&1 & echo $! > /tmp/holder"));
    let busy = client.release(granted[0].lease_id.0).map_err(|e| e.code());
    let still_there = wait_for_drive(&mut b);
    b.ok("kill $(cat /tmp/holder) && sleep 0.2");

    // Release: home to n1's kernel with what n2 wrote.
    let started = Instant::now();
    let released = client.release(granted[0].lease_id.0);
    let on_lender = wait_for_drive(&mut a);
    let home_in = started.elapsed();
    let lender_driver = a.ok(&format!(
        "basename $(readlink /sys/bus/pci/devices/{AT}/driver)"
    ));
    let borrower_has_it = b.sh(&format!("test -e /sys/bus/pci/devices/{AT}")).status == 0;
    let verify = client.audit_verify().map(|v| v.ok);
    let holder = checker.holder(fdid).map_err(|e| e.to_string());
    let steps: Vec<String> = client
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
    let _ = stop_controller.send(());
    let _ = stop_fabric.send(());
    let _ = controller.join();
    let _ = runtime.block_on(fabric_server);
    assert_eq!(
        (
            on_borrower.split_whitespace().nth(1).map(str::to_owned),
            busy,
            still_there.split_whitespace().nth(1).map(str::to_owned),
            released.map_err(|e| e.to_string()),
            on_lender.split_whitespace().nth(1).map(str::to_owned),
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
