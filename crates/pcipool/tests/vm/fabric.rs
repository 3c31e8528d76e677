//! The hypervisor as the fabric, on real kernels: an NVMe drive moves from one guest to another over
//! QMP (`pcipool-fabric-qemu`), the borrower's kernel hot-adds it and its native driver binds with the
//! lender's data there; back on the lender, the borrower's writes are there. A borrower with no free
//! slot sends the drive back to its lender. The same moves go through the fabric manager's HTTP
//! routes, as the controller sends them.

use std::time::Instant;

use pcipool_backend::{FabricControl, FabricError, Step, StepContext};
use pcipool_fabric::{Epoch, Fdid, LeaseId, NodeId};
use pcipool_fabric_qemu::{Drive, Guest as FabricGuest, QemuFabric};
use pcipool_vm::vm::Spec;
use pcipool_wire::StepRequest;

use crate::guest::{Guest, boot_in, image};

const LENDER: NodeId = NodeId(1);
const BORROWER: NodeId = NodeId(2);
/// Root port 1 is 00:03.0 in both guests, so a drive in it is 01:00.0.
const AT: &str = "0000:01:00.0";

/// Waits (in the guest) until `nvme` is bound at 01:00.0 and its namespace is a block device; prints
/// the device name and its first 12 bytes.
fn wait_for_drive(g: &mut Guest) -> String {
    g.ok(&format!(
        "for i in $(seq 200); do b=$(ls /sys/bus/pci/devices/{AT}/nvme/*/ 2>/dev/null | grep -m1 '^nvme[0-9]*n1$'); [ -n \"$b\" ] && [ -e /dev/$b ] && break; sleep 0.1; done; echo $b $(dd if=/dev/$b bs=12 count=1 2>/dev/null)"
    ))
}

fn gone(g: &mut Guest) -> bool {
    g.sh(&format!(
        "for i in $(seq 100); do [ -e /sys/bus/pci/devices/{AT} ] || exit 0; sleep 0.1; done; exit 1"
    ))
    .status
        == 0
}

#[test]
fn a_drive_moves_to_another_guest_with_its_data_and_comes_back_with_the_borrowers() {
    let files = tempfile::tempdir().expect("tempdir");
    let img = image(files.path(), "x.img", 64, "marker-x....");
    let room = crate::guest::room(2);
    let (lender, borrower) = std::thread::scope(|s| {
        let a = s.spawn(|| {
            boot_in(Some(&room), "fabric_lender", |_| {
                Spec::new(4).nvme("x", &img, 1)
            })
        });
        let b = s.spawn(|| boot_in(Some(&room), "fabric_borrower", |_| Spec::new(4)));
        (
            a.join().expect("lender boot"),
            b.join().expect("borrower boot"),
        )
    });
    let (Some(mut a), Some(mut b)) = (lender, borrower) else {
        return;
    };
    let fdid = Fdid {
        node: LENDER,
        bdf: AT.parse().expect("address"),
        vf: None,
    };
    let slots = |ports: &[&str]| ports.iter().map(|p| (*p).to_owned()).collect();
    let (qmp_a, qmp_b) = (a.vm.dir.join("qmp.sock"), b.vm.dir.join("qmp.sock"));
    let guests = |borrower_slots: Vec<String>| {
        vec![
            FabricGuest {
                node: LENDER,
                qmp: qmp_a.clone(),
                free_slots: slots(&["rp2", "rp3", "rp4"]),
            },
            FabricGuest {
                node: BORROWER,
                qmp: qmp_b.clone(),
                free_slots: borrower_slots,
            },
        ]
    };
    let drive = Drive {
        fdid,
        image: img.clone(),
        serial: "x".into(),
        home_slot: "rp1".into(),
    };
    let mut fabric = QemuFabric::new(
        guests(slots(&["rp1", "rp2", "rp3", "rp4"])),
        vec![drive.clone()],
    );
    let lease = LeaseId(1);

    // Lend: the lender's kernel lets go, the fabric moves the drive, the borrower's kernel takes it.
    assert_eq!(a.sh(&format!("pcipool host detach {AT}")).status, 0);
    let started = Instant::now();
    let attached = fabric.attach(lease, fdid, BORROWER);
    let attach_time = started.elapsed();
    let on_borrower = wait_for_drive(&mut b);
    let usable = started.elapsed();
    let again = fabric.attach(lease, fdid, BORROWER);
    let lender_lost_it = gone(&mut a);
    b.ok("b=$(ls /sys/bus/pci/devices/0000:01:00.0/nvme/*/ | grep -m1 '^nvme[0-9]*n1$'); printf 'from-n2.....' | dd of=/dev/$b bs=12 count=1 conv=notrunc 2>/dev/null; sync");
    eprintln!(
        "fabric: attach {:.2} s, block device usable on the borrower {:.2} s after the request",
        attach_time.as_secs_f64(),
        usable.as_secs_f64()
    );
    assert_eq!(
        (
            attached,
            on_borrower.split_whitespace().nth(1).map(str::to_owned),
            again,
            lender_lost_it,
            fabric.holder(fdid)
        ),
        (
            Ok(()),
            Some("marker-x....".to_owned()),
            Ok(()),
            true,
            Ok(Some(BORROWER))
        )
    );

    // Return: the borrower lets go, the drive goes home, the lender's native driver binds again
    // and reads what the borrower wrote.
    assert_eq!(b.sh(&format!("pcipool host detach {AT}")).status, 0);
    let started = Instant::now();
    let detached = fabric.detach(lease);
    let on_lender = wait_for_drive(&mut a);
    eprintln!(
        "fabric: drive usable on the lender {:.2} s after the detach",
        started.elapsed().as_secs_f64()
    );
    let borrower_lost_it = gone(&mut b);
    assert_eq!(
        (
            detached,
            on_lender.split_whitespace().nth(1).map(str::to_owned),
            fabric.detach(lease),
            borrower_lost_it,
            fabric.holder(fdid)
        ),
        (
            Ok(()),
            Some("from-n2.....".to_owned()),
            Ok(()),
            true,
            Ok(Some(LENDER))
        )
    );

    // A borrower with no free slot: the attach fails and the drive is back on its lender.
    let mut full = QemuFabric::new(guests(Vec::new()), vec![drive]);
    assert_eq!(a.sh(&format!("pcipool host detach {AT}")).status, 0);
    let refused = full.attach(LeaseId(2), fdid, BORROWER);
    let back = wait_for_drive(&mut a);
    assert_eq!(
        (
            matches!(refused, Err(FabricError::NoCapacity(_))),
            back.split_whitespace().nth(1).map(str::to_owned),
            full.holder(fdid),
            full.mappings().map(|m| m.len())
        ),
        (
            true,
            Some("from-n2.....".to_owned()),
            Ok(Some(LENDER)),
            Ok(0)
        )
    );

    // The same moves as the controller sends them: fabric steps to the fabric manager over HTTP.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let url = format!(
        "http://{}/v1/steps",
        listener.local_addr().expect("address")
    );
    let manager = std::sync::Arc::new(std::sync::Mutex::new(fabric));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(pcipool_agent::fabric_manager::serve(
        manager,
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    let http = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let send = |step: Step| {
        let ctx = StepContext {
            lender: LENDER,
            bdf: fdid.bdf,
            borrower: BORROWER,
            attached: None,
            lease: LeaseId(3),
            epoch: Epoch(1),
            bars: vec![],
            dma_window: 0,
            driver: Some("nvme".into()),
            lender_driver: Some("nvme".into()),
            lender_vfs: 0,
            deadline_ms: 60_000,
        };
        let mut resp = http
            .post(&url)
            .send_json(&StepRequest { step, ctx })
            .expect("fabric manager");
        (
            resp.status().as_u16(),
            resp.body_mut().read_to_string().unwrap_or_default(),
        )
    };
    assert_eq!(a.sh(&format!("pcipool host detach {AT}")).status, 0);
    let attach = send(Step::Attach);
    let on_borrower = wait_for_drive(&mut b);
    assert_eq!(b.sh(&format!("pcipool host detach {AT}")).status, 0);
    let detach = send(Step::Detach);
    let on_lender = wait_for_drive(&mut a);
    let host_step = send(Step::LenderUnbind);
    let _stopped = stop.send(());
    let _served = runtime.block_on(server);
    assert_eq!(
        (
            attach.0,
            on_borrower.split_whitespace().nth(1).map(str::to_owned),
            detach.0,
            on_lender.split_whitespace().nth(1).map(str::to_owned),
            host_step.0,
            host_step.1.contains("NOT_A_FABRIC_STEP")
        ),
        (
            200,
            Some("from-n2.....".to_owned()),
            200,
            Some("from-n2.....".to_owned()),
            400,
            true
        ),
        "attach: {}, detach: {}",
        attach.1,
        detach.1
    );
}
