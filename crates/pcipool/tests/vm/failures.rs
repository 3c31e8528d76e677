//! Failures on real kernels, through the whole system. A lend the fabric cannot finish (QEMU has no
//! free hot-plug slot on the borrower) compensates: the drive goes back to its lender's kernel, under
//! its native driver, and no lease is left. A lender whose QEMU is killed while its drive is lent: its
//! agent falls silent, its devices are `Lost`, the lease ends (no lease is left dangling) and the
//! fabric pulls the drive out of the borrower's kernel, so that nobody uses a device no lease covers.
//! When the lender boots again, the device's return (reset, verify) runs before it is offered again.

use std::time::{Duration, Instant};

use pcipool_fabric::Fdid;

use crate::lab::{TestLab, marker, n, wait_for_drive};

const AT: &str = "0000:01:00.0";

/// n1 lends one drive; n2 has no free hot-plug slot (its only root port holds its NIC); n3 borrows.
const FAILURES: &str = "[[host]]\nname = \"n1\"\nslots = 4\n[[host.nvme]]\nserial = \"n1a\"\n\n[[host]]\nname = \"n2\"\nslots = 1\n\n[[host]]\nname = \"n3\"\nslots = 4\n";

#[test]
fn a_lend_the_fabric_cannot_finish_compensates_and_a_lost_lender_ends_its_leases() {
    let Some(lab) = TestLab::up("failures", FAILURES, Duration::from_secs(3)) else {
        return;
    };
    let drive = Fdid {
        node: n(1),
        bdf: AT.parse().expect("address"),
        vf: None,
    };

    // No free slot on n2: the fabric's attach fails, the lend compensates to the lender.
    let refused = lab.borrow(n(2), 1, None).map_err(|e| e.to_string());
    let after_refusal = lab.settle(
        &[drive],
        &["available", "quarantined", "lent"],
        Duration::from_secs(90),
    );
    let home = wait_for_drive(&lab, n(1), AT);
    let driver = lab.ok(
        n(1),
        &format!("basename $(readlink /sys/bus/pci/devices/{AT}/driver)"),
    );
    let leases_after_refusal = lab.client.leases().unwrap_or_default().len();
    let agreed_after_refusal = lab.fabric_agrees_with_store();
    // The chain holds the lend's journal: the attach failed for want of a slot, the return ran.
    let audit = lab.client.audit(0, 1000).unwrap_or_default();
    let failed_step = crate::lab::audited_journals(&audit, "Lend", None)
        .iter()
        .flatten()
        .any(|(step, status, _)| step == "attach" && status.contains("no free hot-plug slot"));

    // n3 borrows it; then n1's QEMU dies.
    let granted = match lab.borrow(n(3), 1, None) {
        Ok(mut g) => g.remove(0),
        Err(e) => lab.diagnose(&format!("borrow for n3: {e}")),
    };
    let on_borrower = wait_for_drive(&lab, n(3), AT);
    let killed = Instant::now();
    lab.lab.kill_host(n(1)).expect("a host of the lab");
    let lost = lab.settle(&[drive], &["lost"], Duration::from_secs(60));
    let lost_in = killed.elapsed();
    // The fabric takes the drive from the borrower's kernel: its address disappears there.
    let gone_from_borrower = lab.sh(
        n(3),
        &format!("for i in $(seq 300); do [ -e /sys/bus/pci/devices/{AT} ] || exit 0; sleep 0.1; done; exit 1"),
    );
    let pulled_in = killed.elapsed();
    let leases = lab.client.leases().unwrap_or_default();
    let holder = lab.lab.fabric().holder(drive).map_err(|e| e.to_string());
    let agreed_after_kill = lab.fabric_agrees_with_store();

    // n1 boots again: its agent registers, and the device's return (reset, verify) runs before it
    // is offered again.
    let restarted = Instant::now();
    lab.lab.restart_host(n(1)).expect("n1 boots again");
    let back = lab.settle(
        &[drive],
        &["available", "quarantined"],
        Duration::from_secs(90),
    );
    let back_in = restarted.elapsed();
    let home_again = wait_for_drive(&lab, n(1), AT);
    let returned_after_back = crate::lab::audited_steps(
        &lab.client.audit(0, 1000).unwrap_or_default(),
        "Return",
        None,
    )
    .iter()
    .any(|(step, status, _)| step == "lender_reset" && status == "done");
    let agreed_after_back = lab.fabric_agrees_with_store();
    eprintln!(
        "failures: refused borrow answered {refused:?}; lender killed: lost after {:.1} s, pulled from the borrower after {:.1} s; lender booted again: available {:.1} s after the restart began",
        lost_in.as_secs_f64(),
        pulled_in.as_secs_f64(),
        back_in.as_secs_f64()
    );
    if lost != ["lost"] || gone_from_borrower.status != 0 {
        lab.diagnose(&format!(
            "after the lender died the drive is {lost:?}, still on the borrower: {}",
            gone_from_borrower.status != 0
        ));
    }
    assert_eq!(
        (
            // The refusal says why, in the pool's words.
            refused
                .as_ref()
                .is_err_and(|e| e.contains("attach: ") && e.contains("no free hot-plug slot on n2")),
            after_refusal,
            marker(&home),
            driver,
            leases_after_refusal,
            agreed_after_refusal,
            failed_step,
            marker(&on_borrower),
            leases.iter().any(|l| l.lease_id == granted.lease_id),
            (holder, agreed_after_kill),
            (back, marker(&home_again), returned_after_back, agreed_after_back),
            lab.client
                .audit_verify()
                .map(|v| v.ok)
                .map_err(|e| e.to_string()),
        ),
        (
            true,
            vec!["available".to_owned()],
            Some(lab.marker_of("n1a")),
            "nvme".to_owned(),
            0,
            vec![(drive, "available".to_owned(), Ok(Some(n(1))))],
            true,
            Some(lab.marker_of("n1a")),
            false,
            (Ok(None), vec![(drive, "lost".to_owned(), Ok(None))]),
            (
                vec!["available".to_owned()],
                Some(lab.marker_of("n1a")),
                true,
                vec![(drive, "available".to_owned(), Ok(Some(n(1))))]
            ),
            Ok(true),
        ),
        "refused borrow: {refused:?}"
    );
}
