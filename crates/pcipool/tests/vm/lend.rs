//! Device Lending across real kernels, through the whole system (`pcipool_lab`): the controller
//! (`pcipool server`, SQLite store, HTTP API) and the QEMU fabric manager on this machine, a Linux
//! agent inside each guest reaching the controller through QEMU's restricted user network. A borrow
//! lends the lender's NVMe drive to the borrower's kernel, where the native `nvme` driver binds and the
//! lender's data is there; a release while a program on the borrower has the drive open is refused as
//! busy; the release brings it home, where the lender reads what the borrower wrote, and only the
//! lender's QEMU holds the image. A borrower killed while it holds the drive stops renewing its lease;
//! the lease expires and is fenced, and the drive goes home with what the borrower wrote before it died.

use std::time::{Duration, Instant};

use pcipool_fabric::Fdid;

use crate::lab::{TestLab, audited_steps, marker, n, wait_for_drive, write_drive};

const AT: &str = "0000:01:00.0";

/// n1 lends one drive (n1a, in root port 1: 01:00.0 in its kernel); n2 borrows.
const ONE_LENDER: &str = "[[host]]\nname = \"n1\"\nslots = 4\n[[host.nvme]]\nserial = \"n1a\"\n\n[[host]]\nname = \"n2\"\nslots = 4\n";

/// n1 and n2 lend one drive each; n3 borrows.
const TWO_LENDERS: &str = "[[host]]\nname = \"n1\"\nslots = 4\n[[host.nvme]]\nserial = \"n1a\"\n\n[[host]]\nname = \"n2\"\nslots = 4\n[[host.nvme]]\nserial = \"n2a\"\n\n[[host]]\nname = \"n3\"\nslots = 4\n";

fn drive(node: u32) -> Fdid {
    Fdid {
        node: n(node),
        bdf: AT.parse().expect("address"),
        vf: None,
    }
}

#[test]
fn a_borrow_lends_an_nvme_drive_to_another_kernel_and_the_release_brings_it_home() {
    let Some(lab) = TestLab::up("lend", ONE_LENDER, Duration::from_secs(30)) else {
        return;
    };
    let (lender, borrower) = (n(1), n(2));
    let started = Instant::now();
    let granted = lab.borrow(borrower, 1, None).map(|mut g| g.remove(0));
    let Ok(granted) = granted else {
        lab.diagnose(&format!("borrow: {granted:?}"));
    };
    let lent_in = started.elapsed();
    let on_borrower = wait_for_drive(&lab, borrower, AT);
    let usable_in = started.elapsed();
    write_drive(&lab, borrower, AT, "from-n2.....");

    // A program on the borrower still has the drive open: the release is refused, nothing forced.
    lab.ok(borrower, &format!("b=$(ls /sys/bus/pci/devices/{AT}/nvme/*/ | grep -m1 '^nvme[0-9]*n1$'); sleep 600 < /dev/$b > /dev/null 2>&1 & echo $! > /tmp/holder"));
    let busy = lab.client.release(granted.lease_id.0).map_err(|e| e.code());
    let still_there = wait_for_drive(&lab, borrower, AT);
    lab.ok(borrower, "kill $(cat /tmp/holder) && sleep 0.2");

    // Release: home to n1's kernel with what n2 wrote.
    let started = Instant::now();
    let released = lab.client.release(granted.lease_id.0);
    let state = lab.settle(&[drive(1)], &["available", "lent"], Duration::from_secs(90));
    if state != ["available"] {
        lab.diagnose(&format!("after the release the drive is {state:?}"));
    }
    let on_lender = wait_for_drive(&lab, lender, AT);
    let home_in = started.elapsed();
    let lender_driver = lab.ok(
        lender,
        &format!("basename $(readlink /sys/bus/pci/devices/{AT}/driver)"),
    );
    let borrower_has_it = lab
        .sh(borrower, &format!("test -e /sys/bus/pci/devices/{AT}"))
        .status
        == 0;
    let verify = lab.client.audit_verify().map(|v| v.ok);
    let audit = lab.client.audit(0, 1000).unwrap_or_default();
    // Every step of both workflows is in the chain, with what it reported.
    let lend_steps = audited_steps(&audit, "Lend", Some(granted.workflow));
    let return_steps = audited_steps(&audit, "Return", None);
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
            lab.fabric_agrees_with_store(),
        ),
        (
            Some(lab.marker_of("n1a")),
            Err(Some(pcipool_wire::ErrorCode::Busy)),
            Some("from-n2.....".to_owned()),
            Ok(()),
            Some("from-n2.....".to_owned()),
            "nvme".to_owned(),
            false,
            Ok(true),
            vec![(drive(1), "available".to_owned(), Ok(Some(lender)))],
        ),
    );
    let finished = |steps: &[(String, String, String)]| {
        !steps.is_empty() && steps.iter().all(|(_, status, _)| status == "done")
    };
    let output_of = |steps: &[(String, String, String)], step: &str| {
        steps
            .iter()
            .find(|(s, _, _)| s == step)
            .map(|(_, _, o)| o.clone())
    };
    assert_eq!(
        (
            finished(&lend_steps),
            output_of(&lend_steps, "borrower_hot_add").is_some_and(|o| o.contains(AT)),
            finished(&return_steps),
            output_of(&return_steps, "lender_reset").is_some_and(|o| o.contains("reset")),
        ),
        (true, true, true, true),
        "the chain's lend {lend_steps:#?}\nand return {return_steps:#?}"
    );
}

#[test]
fn a_borrower_killed_while_it_holds_the_drive_loses_the_lease_and_the_drive_goes_home() {
    let Some(lab) = TestLab::up("killed", ONE_LENDER, Duration::from_secs(3)) else {
        return;
    };
    let (lender, borrower) = (n(1), n(2));
    // A 4 s lease, renewed by the borrower's agent while it lives.
    let granted = match lab.borrow(borrower, 1, Some(4)) {
        Ok(mut g) => g.remove(0),
        Err(e) => lab.diagnose(&format!("borrow: {e}")),
    };
    let on_borrower = wait_for_drive(&lab, borrower, AT);
    // Outlives its first term: the heartbeats renew it.
    std::thread::sleep(Duration::from_secs(6));
    let renewed = lab
        .client
        .leases()
        .unwrap_or_default()
        .iter()
        .any(|l| l.lease_id == granted.lease_id);
    write_drive(&lab, borrower, AT, "last-words..");
    let killed = Instant::now();
    lab.lab.kill_host(borrower).expect("a host of the lab");
    // Its heartbeats stop: the lease expires, is fenced, and the return runs without the borrower.
    let mut states = Vec::new();
    while killed.elapsed() < Duration::from_secs(120) {
        let state = lab.state_of(drive(1));
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
    let on_lender = wait_for_drive(&lab, lender, AT);
    let home_in = killed.elapsed();
    let leases = lab.client.leases().unwrap_or_default();
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
            lab.fabric_agrees_with_store(),
            lab.client
                .audit_verify()
                .map(|v| v.ok)
                .map_err(|e| e.to_string())
        ),
        (
            true,
            Some(lab.marker_of("n1a")),
            Some("last-words..".to_owned()),
            false,
            vec![(drive(1), "available".to_owned(), Ok(Some(lender)))],
            Ok(true)
        )
    );
}

#[test]
fn a_gang_borrow_takes_a_drive_from_each_of_two_lenders_and_gives_both_back() {
    let Some(lab) = TestLab::up("gang", TWO_LENDERS, Duration::from_secs(30)) else {
        return;
    };
    let borrower = n(3);
    let granted = match lab.borrow(borrower, 2, None) {
        Ok(g) => g,
        Err(e) => lab.diagnose(&format!("gang borrow: {e}")),
    };
    let mut lenders: Vec<u32> = granted.iter().map(|g| g.fdid.node.0).collect();
    lenders.sort_unstable();
    // The borrower's two first free slots (root ports 1 and 2) give buses 1 and 2.
    let mut seen = vec![
        marker(&wait_for_drive(&lab, borrower, "0000:01:00.0")),
        marker(&wait_for_drive(&lab, borrower, "0000:02:00.0")),
    ];
    seen.sort();
    let agreed_while_lent = lab.fabric_agrees_with_store();
    let released: Vec<Result<(), String>> = granted
        .iter()
        .map(|g| lab.client.release(g.lease_id.0).map_err(|e| e.to_string()))
        .collect();
    let both = [drive(1), drive(2)];
    let states = lab.settle(&both, &["available"], Duration::from_secs(120));
    if states.iter().any(|s| s != "available") {
        lab.diagnose(&format!("after the releases the drives are {states:?}"));
    }
    let home = (
        marker(&wait_for_drive(&lab, n(1), AT)),
        marker(&wait_for_drive(&lab, n(2), AT)),
    );
    assert_eq!(
        (
            lenders,
            seen,
            agreed_while_lent,
            released,
            home,
            lab.fabric_agrees_with_store()
        ),
        (
            vec![1, 2],
            vec![Some(lab.marker_of("n1a")), Some(lab.marker_of("n2a"))],
            vec![
                (drive(1), "lent".to_owned(), Ok(Some(borrower))),
                (drive(2), "lent".to_owned(), Ok(Some(borrower)))
            ],
            vec![Ok(()), Ok(())],
            (Some(lab.marker_of("n1a")), Some(lab.marker_of("n2a"))),
            vec![
                (drive(1), "available".to_owned(), Ok(Some(n(1)))),
                (drive(2), "available".to_owned(), Ok(Some(n(2))))
            ]
        )
    );
}
