use pcipool_backend::{DeviceControl, DeviceError, DeviceHealth, Inventory};
use pcipool_fabric::{Fdid, LeaseId, NodeId};
use pcipool_pcie::{Bdf, ResetMethod};
use pcipool_sim::{EventKind, FabricDesc, HostControl, HostView, Sim};

const LAB: &str = r#"
[[switch]]
name = "sw0"

[[host]]
name = "lender"
node = 1
adapters = ["dolphin-pxh830-32g"]
links = ["switch:sw0"]

[[host.device]]
bdf = "0000:03:00.0"
preset = "nvme"
driver = "nvme"

[[host.device]]
bdf = "0000:04:00.0"
preset = "gpu"
reset = "bus-only"

[[host.device]]
bdf = "0000:05:00.0"
preset = "fpga"
reset = "flr-hangs"

[[host]]
name = "borrower"
node = 2
adapters = ["dolphin-pxh830-32g"]
links = ["switch:sw0"]
"#;

fn sim() -> Sim {
    Sim::new(&FabricDesc::parse(LAB).expect("valid description"), 7).expect("builds")
}

fn bdf(s: &str) -> Bdf {
    s.parse().expect("address")
}

const LENDER: NodeId = NodeId(1);
const BORROWER: NodeId = NodeId(2);

#[test]
fn inventory_lists_lender_devices() {
    let s = sim();
    let inv = HostView {
        sim: &s,
        node: LENDER,
    }
    .inventory()
    .expect("inventory");
    let got: Vec<(String, Option<String>)> = inv
        .devices
        .iter()
        .map(|d| (d.bdf.to_string(), d.driver.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("0000:03:00.0".to_owned(), Some("nvme".to_owned())),
            ("0000:04:00.0".to_owned(), None),
            ("0000:05:00.0".to_owned(), None)
        ]
    );
}

#[test]
fn unbind_while_in_use_is_busy() {
    let mut s = sim();
    s.set_users(LENDER, bdf("03:00.0"), 2);
    let err = HostControl {
        sim: &mut s,
        node: LENDER,
    }
    .unbind(bdf("03:00.0"));
    assert_eq!(
        err,
        Err(DeviceError::Busy {
            bdf: bdf("0000:03:00.0"),
            driver: "nvme".into(),
            users: 2
        })
    );
}

#[test]
fn hanging_unbind_times_out_in_virtual_time() {
    let mut s = sim();
    s.hang_next_unbind(LENDER, bdf("03:00.0"));
    let before = s.now();
    let err = HostControl {
        sim: &mut s,
        node: LENDER,
    }
    .unbind(bdf("03:00.0"));
    assert_eq!(
        (
            matches!(err, Err(DeviceError::Timeout { .. })),
            s.now() - before
        ),
        (true, pcipool_sim::sim::STEP_DEADLINE)
    );
}

#[test]
fn flr_that_hangs_reports_reset_failed_and_device_hung() {
    let mut s = sim();
    let mut c = HostControl {
        sim: &mut s,
        node: LENDER,
    };
    let err = c.reset(bdf("05:00.0"), ResetMethod::Flr);
    let health = c.health(bdf("05:00.0"));
    assert_eq!(
        (err, health),
        (
            Err(DeviceError::ResetFailed {
                bdf: bdf("05:00.0"),
                method: ResetMethod::Flr
            }),
            Ok(DeviceHealth::Hung)
        )
    );
}

#[test]
fn bus_only_device_refuses_flr() {
    let mut s = sim();
    let err = HostControl {
        sim: &mut s,
        node: LENDER,
    }
    .reset(bdf("04:00.0"), ResetMethod::Flr);
    assert_eq!(
        err,
        Err(DeviceError::ResetUnsupported {
            bdf: bdf("04:00.0"),
            method: ResetMethod::Flr
        })
    );
}

#[test]
fn injected_reset_failure_is_reported_once() {
    let mut s = sim();
    s.fail_next_reset(LENDER, bdf("03:00.0"));
    let mut c = HostControl {
        sim: &mut s,
        node: LENDER,
    };
    let first = c.reset(bdf("03:00.0"), ResetMethod::Flr);
    let second = c.reset(bdf("03:00.0"), ResetMethod::Flr);
    assert_eq!((first.is_err(), second), (true, Ok(())));
}

#[test]
fn reset_restores_power_on_config() {
    let mut s = sim();
    let mut c = HostControl {
        sim: &mut s,
        node: LENDER,
    };
    c.write_config(bdf("03:00.0"), 0x04, &[0x06, 0x00])
        .expect("write command");
    c.reset(bdf("03:00.0"), ResetMethod::Flr).expect("reset");
    let mut cmd = [0u8; 2];
    c.read_config(bdf("03:00.0"), 0x04, &mut cmd).expect("read");
    assert_eq!(
        (
            cmd,
            s.device(LENDER, bdf("03:00.0"))
                .map(|d| d.dev.is_reset_state())
        ),
        ([0, 0], Some(true))
    );
}

#[test]
fn crashed_host_reports_host_down() {
    let mut s = sim();
    s.crash(LENDER);
    let c = HostControl {
        sim: &mut s,
        node: LENDER,
    };
    assert_eq!(c.health(bdf("03:00.0")), Err(DeviceError::HostDown));
}

#[test]
fn rebooted_host_comes_back_unbound_and_reset() {
    let mut s = sim();
    s.crash(LENDER);
    s.reboot(LENDER);
    let d = s.device(LENDER, bdf("03:00.0")).expect("present");
    assert_eq!((d.driver.clone(), d.dev.is_reset_state()), (None, true));
}

#[test]
fn surprise_removal_makes_device_gone() {
    let mut s = sim();
    s.surprise_remove(LENDER, bdf("03:00.0"));
    let c = HostControl {
        sim: &mut s,
        node: LENDER,
    };
    assert_eq!(c.health(bdf("03:00.0")), Ok(DeviceHealth::Gone));
}

#[test]
fn hung_device_reads_all_ones() {
    let mut s = sim();
    s.hang(LENDER, bdf("03:00.0"));
    let c = HostControl {
        sim: &mut s,
        node: LENDER,
    };
    let mut v = [0u8; 4];
    c.read_config(bdf("03:00.0"), 0, &mut v).expect("read");
    assert_eq!(v, [0xff; 4]);
}

fn lend_nvme(s: &mut Sim) -> u64 {
    let fdid: Fdid = "n1:0000:03:00.0".parse().expect("fdid");
    s.fabric
        .map_bar(LeaseId(1), fdid, 0, 0x4000, BORROWER)
        .expect("map BAR");
    s.fabric
        .mappings()
        .next()
        .map(|m| m.host_addr)
        .expect("mapped")
}

#[test]
fn borrower_reads_through_mapping_then_all_ones_after_unmap() {
    let mut s = sim();
    let addr = lend_nvme(&mut s);
    let live = s.borrower_read(BORROWER, addr + 0x10);
    s.fabric.unmap_lease(LeaseId(1));
    let stale = s.borrower_read(BORROWER, addr + 0x10);
    let faulted = s
        .events()
        .iter()
        .any(|e| matches!(e.kind, EventKind::AccessFault { .. }));
    assert_eq!((live, stale, faulted), (0x10, u32::MAX, true));
}

#[test]
fn link_down_makes_reads_all_ones_until_link_up() {
    let mut s = sim();
    let addr = lend_nvme(&mut s);
    let adapter = pcipool_fabric::AdapterId {
        node: BORROWER,
        index: 0,
    };
    s.link_down(adapter);
    let down = s.borrower_read(BORROWER, addr);
    s.link_up(adapter);
    let up = s.borrower_read(BORROWER, addr);
    assert_eq!((down, up), (u32::MAX, 0));
}

#[test]
fn dma_outside_any_window_is_an_iommu_fault() {
    let mut s = sim();
    let fdid: Fdid = "n1:0000:03:00.0".parse().expect("fdid");
    let err = s.device_dma(fdid, 0xdead_0000);
    let logged = s
        .events()
        .iter()
        .any(|e| matches!(e.kind, EventKind::IommuFault { .. }));
    assert_eq!((err.is_err(), logged), (true, true));
}

#[test]
fn slow_steps_stretch_virtual_time() {
    let mut s = sim();
    s.slow_steps(10);
    let before = s.now();
    HostControl {
        sim: &mut s,
        node: LENDER,
    }
    .reset(bdf("03:00.0"), ResetMethod::Flr)
    .expect("reset");
    assert_eq!(s.now() - before, 1_000_000_000);
}

#[test]
fn bind_requires_a_matching_driver() {
    let mut s = sim();
    let err = HostControl {
        sim: &mut s,
        node: LENDER,
    }
    .bind(bdf("04:00.0"), "nvme");
    assert_eq!(
        err,
        Err(DeviceError::NoMatchingDriver {
            bdf: bdf("04:00.0"),
            driver: "nvme".into()
        })
    );
}

#[test]
fn steps_are_idempotent() {
    let mut s = sim();
    let mut c = HostControl {
        sim: &mut s,
        node: LENDER,
    };
    c.unbind(bdf("03:00.0")).expect("first unbind");
    c.unbind(bdf("03:00.0")).expect("second unbind is a no-op");
    c.hot_remove(bdf("03:00.0")).expect("remove");
    c.hot_remove(bdf("03:00.0")).expect("remove again");
    c.sim.hot_add(LENDER, bdf("03:00.0")).expect("add");
    c.bind(bdf("03:00.0"), "nvme").expect("bind");
    assert_eq!(c.bind(bdf("03:00.0"), "nvme"), Ok(()));
}

#[test]
fn same_seed_same_event_hash() {
    let run = |seed| {
        let mut s = Sim::new(&FabricDesc::parse(LAB).expect("valid"), seed).expect("builds");
        for _ in 0..50 {
            let pick = s.rng().below(3);
            let b = [bdf("03:00.0"), bdf("04:00.0"), bdf("05:00.0")]
                [usize::try_from(pick).unwrap_or(0)];
            let _ = HostControl {
                sim: &mut s,
                node: LENDER,
            }
            .reset(b, ResetMethod::Bus);
        }
        s.event_hash()
    };
    assert_eq!(run(11), run(11));
}

#[test]
fn malformed_description_is_a_clear_error() {
    let err = FabricDesc::parse("[[host]]\nname = \"x\"\nnode = 1\nadapters = [\"no-such\"]\n")
        .map(|_| ());
    assert_eq!(
        err.map_err(|e| e.to_string()),
        Err("host x: unknown adapter profile 'no-such'".to_owned())
    );
}

const NIC_LAB: &str = r#"
[[host]]
name = "lender"
node = 1
adapters = ["idt"]
links = ["n2/a0"]

[[host.device]]
bdf = "0000:06:00.0"
preset = "sriov-nic"
driver = "mlx5_core"

[[host]]
name = "borrower"
node = 2
adapters = ["idt"]
"#;

#[test]
fn vfs_appear_when_enabled_and_go_when_disabled() {
    let mut s = Sim::new(&FabricDesc::parse(NIC_LAB).expect("valid"), 1).expect("builds");
    let vfs = s.enable_vfs(LENDER, bdf("06:00.0"), 4).expect("SR-IOV");
    let inv = HostView {
        sim: &s,
        node: LENDER,
    }
    .inventory()
    .expect("inventory");
    let vf_ids: Vec<(String, Option<Bdf>, u16)> = inv
        .devices
        .iter()
        .filter(|d| d.physfn.is_some())
        .map(|d| (d.bdf.to_string(), d.physfn, d.facts.device_id))
        .collect();
    let num = inv
        .devices
        .iter()
        .find(|d| d.bdf == bdf("06:00.0"))
        .and_then(|d| d.sriov.clone())
        .map(|x| x.num_vfs);
    s.enable_vfs(LENDER, bdf("06:00.0"), 0).expect("disable");
    let after = HostView {
        sim: &s,
        node: LENDER,
    }
    .inventory()
    .expect("inventory")
    .devices
    .len();
    // First VF offset 2, stride 1 (the preset's ARI layout): 06:00.2 .. 06:00.5.
    assert_eq!(
        (vfs.len(), vf_ids.first().cloned(), num, after),
        (
            4,
            Some(("0000:06:00.2".to_owned(), Some(bdf("06:00.0")), 0x1018)),
            Some(4),
            1
        )
    );
}

#[test]
fn too_many_vfs_is_unsupported() {
    let mut s = Sim::new(&FabricDesc::parse(NIC_LAB).expect("valid"), 1).expect("builds");
    assert!(matches!(
        s.enable_vfs(LENDER, bdf("06:00.0"), 17),
        Err(DeviceError::Unsupported { .. })
    ));
}

#[test]
fn shadow_on_borrower_binds_native_driver_and_forwards_config() {
    let mut s = Sim::new(&FabricDesc::parse(NIC_LAB).expect("valid"), 1).expect("builds");
    let fdid: Fdid = "n1:0000:06:00.0".parse().expect("fdid");
    HostControl {
        sim: &mut s,
        node: LENDER,
    }
    .unbind(bdf("06:00.0"))
    .expect("lender lets go");
    let at = s
        .attach_shadow(BORROWER, fdid)
        .expect("hot-add on borrower");
    assert_eq!(
        at,
        bdf("80:00.0"),
        "the first free slot behind the borrower's NTB"
    );
    let mut c = HostControl {
        sim: &mut s,
        node: BORROWER,
    };
    c.bind(bdf("80:00.0"), "mlx5_core")
        .expect("native driver binds");
    c.write_config(bdf("80:00.0"), 0x04, &[0x06, 0x00])
        .expect("forwarded write");
    let mut cmd = [0u8; 2];
    s.read_config(LENDER, bdf("06:00.0"), 0x04, &mut cmd)
        .expect("lender reads the real device");
    assert_eq!(cmd, [0x06, 0x00]);
}

#[test]
fn shadow_reads_all_ones_and_drops_writes_when_link_is_down() {
    let mut s = Sim::new(&FabricDesc::parse(NIC_LAB).expect("valid"), 1).expect("builds");
    let fdid: Fdid = "n1:0000:06:00.0".parse().expect("fdid");
    s.attach_shadow(BORROWER, fdid).expect("hot-add");
    s.link_down(pcipool_fabric::AdapterId {
        node: LENDER,
        index: 0,
    });
    let mut c = HostControl {
        sim: &mut s,
        node: BORROWER,
    };
    let mut ids = [0u8; 4];
    c.read_config(bdf("80:00.0"), 0, &mut ids)
        .expect("read completes");
    c.write_config(bdf("80:00.0"), 0x04, &[0x06, 0x00])
        .expect("write is dropped, not an error");
    let mut cmd = [0u8; 2];
    s.read_config(LENDER, bdf("06:00.0"), 0x04, &mut cmd)
        .expect("lender");
    assert_eq!((ids, cmd), ([0xff; 4], [0x06, 0x04]));
}

#[test]
fn stale_borrower_write_is_dropped_with_an_event() {
    let mut s = sim();
    let addr = lend_nvme(&mut s);
    s.fabric.unmap_lease(LeaseId(1));
    let delivered = s.borrower_write(BORROWER, addr);
    let logged = s
        .events()
        .iter()
        .any(|e| matches!(e.kind, EventKind::AccessFault { .. }));
    assert_eq!((delivered, logged), (false, true));
}

#[test]
fn qualification_runs_on_simulated_facts() {
    use pcipool_qualify::{AccessModel, AdapterProfile, Code, Input, Verdict, gather, qualify};
    let s = sim();
    let view = HostView {
        sim: &s,
        node: LENDER,
    };
    let inv = view.inventory().expect("inventory");
    let platform = view.platform_facts().expect("host exists");
    let aliases = pcipool_sim::presets::driver_aliases();
    let profile = AdapterProfile::named("dolphin-pxh830-32g").expect("shipped");
    let verdict = |b: &str| {
        let record = inv
            .devices
            .iter()
            .find(|d| d.bdf == bdf(b))
            .expect("device");
        let ctx = gather::device_context(&inv, record, None, Some(&aliases));
        let input = Input {
            device: &ctx,
            platform: &platform,
            profile: &profile,
            dma_window: 256 << 20,
        };
        let r = qualify(&input, AccessModel::Lend, &[]);
        (
            r.verdict,
            r.findings
                .iter()
                .filter(|f| f.severity > pcipool_qualify::Severity::Info)
                .map(|f| f.code)
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(
        (verdict("03:00.0"), verdict("04:00.0")),
        (
            (Verdict::Pass, vec![]),
            (Verdict::Warn, vec![Code::ResetBusOnly])
        )
    );
}

#[test]
fn the_return_enables_the_lenders_vfs_again_and_leaves_present_ones_alone() {
    use pcipool_agent::Local;
    use pcipool_backend::{Executor, Step, StepContext};
    let mut s = Sim::new(&FabricDesc::parse(NIC_LAB).expect("valid"), 1).expect("builds");
    let pf = bdf("06:00.0");
    let count = |s: &Sim| {
        s.host(LENDER).map_or(0, |h| {
            h.devices.values().filter(|d| d.physfn == Some(pf)).count()
        })
    };
    let ctx = StepContext {
        lender: LENDER,
        bdf: pf,
        borrower: BORROWER,
        attached: None,
        lease: pcipool_fabric::LeaseId(1),
        epoch: pcipool_fabric::Epoch(1),
        bars: vec![],
        dma_window: 0,
        driver: None,
        lender_driver: Some("mlx5_core".into()),
        lender_vfs: 4,
        deadline_ms: 1000,
    };
    // The VFs are gone (the host rebooted, or something reset the PF outside the kernel's restore).
    let before = count(&s);
    Local(&mut s)
        .run(Step::LenderRestore, &ctx)
        .expect("restore");
    let restored = count(&s);
    let events = s.events().len();
    // A rerun finds them present and leaves them alone (no VF is added again).
    Local(&mut s).run(Step::LenderRestore, &ctx).expect("rerun");
    let readded = s.events()[events..]
        .iter()
        .filter(|e| matches!(e.kind, EventKind::HotAdded { .. }))
        .count();
    assert_eq!((before, restored, count(&s), readded), (0, 4, 4, 0));
}

/// Found by the whole-system simulation (`pcipool sim run --seed 12`): a borrower-side teardown that ran
/// late removed the device a newer lease had put at the same, reused, address.
#[test]
fn a_late_teardown_leaves_the_device_now_at_its_old_address_alone() {
    use pcipool_agent::Local;
    use pcipool_backend::{Executor, Step, StepContext};
    let mut s = sim();
    let first: Fdid = "n1:0000:03:00.0".parse().expect("fdid");
    let second: Fdid = "n1:0000:04:00.0".parse().expect("fdid");
    let at = s.attach_shadow(BORROWER, first).expect("first lend");
    s.detach_shadow(BORROWER, at)
        .expect("first device gone (its borrower's agent cleaned up)");
    let reused = s.attach_shadow(BORROWER, second).expect("second lend");
    let late = StepContext {
        lender: LENDER,
        bdf: first.bdf,
        borrower: BORROWER,
        attached: Some(at),
        lease: LeaseId(1),
        epoch: pcipool_fabric::Epoch(1),
        bars: vec![],
        dma_window: 0,
        driver: None,
        lender_driver: None,
        lender_vfs: 0,
        deadline_ms: 1000,
    };
    let removed = Local(&mut s).run(Step::BorrowerHotRemove, &late);
    assert_eq!(
        (reused, removed.ok(), s.borrowed_at(BORROWER, second)),
        (at, Some(pcipool_backend::StepOutput::AlreadyDone), Some(at))
    );
}
