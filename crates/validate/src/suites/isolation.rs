//! `isolation`: what a host that does not hold a device can reach of it, and what the device can reach.

use pcipool_fabric::{Fdid, NodeId};
use pcipool_qualify::AccessModel;

use super::{Options, Progress, Recorder, TENANT, cannot_tell, plan};
use crate::report::{Check, Suite};
use crate::target::{Attachment, Held, Target};

/// `isolation`: with a device lent, a host that does not hold it cannot reach it, its holder can; the
/// device's DMA reaches only its window; another tenant cannot release the lease (and the attempt is
/// audited); after the release the former holder and the device's DMA reach nothing. Every blocked
/// access must leave a fault record.
pub fn isolation(
    t: &dyn Target,
    o: &Options,
    progress: &mut dyn FnMut(&Progress),
    failed: usize,
) -> Vec<Check> {
    let plan: Vec<Fdid> = plan(t, o)
        .into_iter()
        .filter(|(_, models)| models.contains(&AccessModel::Lend))
        .map(|(f, _)| f)
        .collect();
    let mut r = Recorder::new(Suite::Isolation, progress, plan.len() as u64, failed);
    let whole_device = t.attachment() == Attachment::WholeDevice;
    for fdid in plan {
        let name = fdid.to_string();
        let borrowers = t.borrowers(fdid);
        let (Some(holder), Some(outsider)) =
            (borrowers.first().copied(), borrowers.get(1).copied())
        else {
            r.check(
                "two other hosts",
                &name,
                false,
                vec!["needs a holder and an outsider".into()],
                0,
            );
            r.step();
            continue;
        };
        let head = t.audit_head();
        let held: Held = match t.borrow(TENANT, fdid, AccessModel::Lend, holder) {
            Ok(h) => h,
            Err(e) => {
                r.check("lend granted", &name, false, vec![e], 0);
                r.step();
                continue;
            }
        };
        if whole_device {
            moved_device(t, &mut r, &held, outsider, head);
            r.step();
            continue;
        }
        let (Some((_, bar)), Some((dma, size))) =
            (t.bar_address(held.lease), t.dma_window(held.lease))
        else {
            r.check(
                "lease is mapped",
                &name,
                false,
                vec!["no BAR or DMA mapping".into()],
                0,
            );
            let _ = t.release(Some(TENANT), held.lease);
            r.step();
            continue;
        };
        // Positive controls: the holder reaches the device, the device reaches the holder's memory.
        let reached = t.host_read(holder, bar);
        r.check(
            "holder reaches its device",
            &name,
            reached != u32::MAX,
            vec![format!("{holder} read {bar:#x}: {reached:#x}")],
            0,
        );
        let dma_in = t.device_dma(fdid, dma);
        r.check(
            "device DMA reaches its window",
            &name,
            dma_in == Some(holder),
            vec![format!("DMA to {dma:#x} reached {dma_in:?}")],
            0,
        );
        // Negative checks, each of which must also be recorded as a fault.
        let blocked = |r: &mut Recorder<'_>, what: &str, attempt: &dyn Fn() -> bool| {
            let faults = t.faults_recorded();
            let got_through = attempt();
            let recorded = match (faults, t.faults_recorded()) {
                (Ok(before), Ok(after)) => Ok(after > before),
                (Err(why), _) | (_, Err(why)) => Err(why),
            };
            r.check(
                what,
                &name,
                !got_through && recorded == Ok(true),
                vec![match &recorded {
                    Ok(recorded) => {
                        format!("got through: {got_through}, fault recorded: {recorded}")
                    }
                    Err(why) => cannot_tell("fault recorded", why),
                }],
                0,
            );
        };
        blocked(&mut r, "a non-holder host is refused", &|| {
            t.host_read(outsider, bar) != u32::MAX
        });
        blocked(&mut r, "DMA outside the window is refused", &|| {
            t.device_dma(fdid, dma + size + 0x1000).is_some()
        });
        intruder_refused(t, &mut r, &held, head);
        if let Err(e) = t.release(Some(TENANT), held.lease) {
            r.check("released", &name, false, vec![e], 0);
            r.step();
            continue;
        }
        blocked(
            &mut r,
            "the former holder is refused after release",
            &|| t.host_read(holder, bar) != u32::MAX,
        );
        blocked(&mut r, "the device's DMA is refused after release", &|| {
            t.device_dma(fdid, dma).is_some()
        });
        r.step();
    }
    r.checks
}

/// Where a device is: the hosts whose kernel has it and those the fabric places it in.
fn whereabouts(
    t: &dyn Target,
    fdid: Fdid,
) -> (
    crate::target::Seen<Vec<NodeId>>,
    crate::target::Seen<Vec<NodeId>>,
) {
    (t.kernels_with(fdid), t.fabric_places(fdid))
}

/// Checks that the device is in exactly `only`'s kernel and PCI tree.
fn only_in(r: &mut Recorder<'_>, t: &dyn Target, what: &str, fdid: Fdid, only: NodeId) {
    let (kernels, placed) = whereabouts(t, fdid);
    let evidence = |seen: &crate::target::Seen<Vec<NodeId>>, whose: &str| match seen {
        Ok(nodes) => format!("{whose}: {nodes:?}, expected [{only}]"),
        Err(why) => cannot_tell(whose, why),
    };
    r.check(
        what,
        &fdid.to_string(),
        kernels.as_ref().is_ok_and(|k| k == &vec![only])
            && placed.as_ref().is_ok_and(|p| p == &vec![only]),
        vec![
            evidence(&kernels, "kernels that have the device"),
            evidence(&placed, "PCI trees the fabric puts it in"),
        ],
        0,
    );
}

/// Isolation on a fabric that moves whole devices: while lent, the device is in the holder's kernel
/// and PCI tree and in no other host's (the lender's included), so no other host has a path to it and
/// its DMA reaches only the holder's memory; another tenant cannot release the lease (audited); after
/// the release it is back in its lender alone and the former holder has nothing of it.
fn moved_device(t: &dyn Target, r: &mut Recorder<'_>, held: &Held, outsider: NodeId, head: u64) {
    let (fdid, holder) = (held.fdid, held.borrower);
    let name = fdid.to_string();
    // Positive control and the negative checks in one observation: the holder has it, nobody else.
    only_in(
        r,
        t,
        "only the holder has the device while lent",
        fdid,
        holder,
    );
    let outsider_has = t.kernels_with(fdid).map(|k| k.contains(&outsider));
    r.check(
        "a non-holder host has no path to the device",
        &name,
        outsider_has == Ok(false),
        vec![match &outsider_has {
            Ok(has) => format!("{outsider}'s kernel has {fdid}: {has}"),
            Err(why) => cannot_tell("the outsider's devices", why),
        }],
        0,
    );
    intruder_refused(t, r, held, head);
    only_in(
        r,
        t,
        "the holder keeps the device after the refused release",
        fdid,
        holder,
    );
    if let Err(e) = t.release(Some(TENANT), held.lease) {
        r.check("released", &name, false, vec![e], 0);
        return;
    }
    only_in(
        r,
        t,
        "after release only the lender has the device, the former holder nothing",
        fdid,
        fdid.node,
    );
}

/// Another tenant's release of the lease is refused, and the refusal is audited.
fn intruder_refused(t: &dyn Target, r: &mut Recorder<'_>, held: &Held, head: u64) {
    let intruder = t.release(Some("intruder"), held.lease);
    let audited = t.audit_after(head).is_ok_and(|records| {
        records
            .iter()
            .any(|a| a.target == held.lease.to_string() && a.result.starts_with("refused"))
    });
    r.check(
        "another tenant cannot release the lease",
        &held.fdid.to_string(),
        intruder.is_err() && audited,
        vec![format!(
            "release by another tenant: {intruder:?}, audited: {audited}"
        )],
        0,
    );
}
