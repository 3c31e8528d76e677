use pcipool_pool::policy::Policy;
use pcipool_sim::FabricDesc;
use pcipool_validate::sim_target::{Breakage, SimTarget};
use pcipool_validate::{Options, Report, RunInfo, Suite};

const LAB: &str = include_str!("../../../../fabrics/lab-4.toml");

/// A lender with two NVMe functions on one bus (siblings: a bus reset resets both).
const SIBLINGS: &str = r#"
[[switch]]
name = "sw"

[[host]]
name = "lender"
node = 1
adapters = ["dolphin-pxh830-32g"]
links = ["switch:sw"]

[[host.device]]
bdf = "0000:03:00.0"
preset = "nvme"

[[host.device]]
bdf = "0000:03:00.1"
preset = "nvme"

[[host]]
name = "borrower-{i}"
node = 2
count = 2
adapters = ["dolphin-pxh830-32g"]
links = ["switch:sw"]
"#;

fn run(breakage: Breakage, suites: &[Suite], cycles: u32) -> Report {
    run_on(LAB, breakage, suites, cycles)
}

fn run_on(fabric: &str, breakage: Breakage, suites: &[Suite], cycles: u32) -> Report {
    let dir = tempfile::tempdir().expect("tempdir");
    let desc = FabricDesc::parse(fabric).expect("fabric");
    let target =
        SimTarget::new(&desc, 7, Policy::default(), dir.path(), breakage).expect("lab builds");
    let options = Options {
        suites: suites.to_vec(),
        cycles,
        devices: Vec::new(),
        // The data-path suite speaks HTTP to a running pool; the binary's tests cover it.
        data_path: None,
    };
    let checks = pcipool_validate::run(&target, &options, &mut |_| {});
    Report::new(
        RunInfo {
            version: "test".into(),
            seed: 7,
            fabric: "lab-4".into(),
            policy: "default".into(),
            profile: "test".into(),
        },
        checks,
    )
}

fn failed_checks(report: &Report) -> Vec<String> {
    let mut names: Vec<String> = report
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.name.clone())
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn every_built_suite_passes_on_a_sound_lab() {
    let in_process: Vec<Suite> = Suite::ALL
        .into_iter()
        .filter(|s| *s != Suite::DataPath)
        .collect();
    let report = run(Breakage::None, &in_process, 2);
    assert!(report.passed(), "{}", report.summary_table());
    // Every lendable device of the lab was cycled under each of its models, and isolation ran per device.
    let cycled = report
        .checks
        .iter()
        .filter(|c| c.suite == Suite::Cycles && c.name == "returned to available")
        .count();
    assert!(cycled >= 2 * 9, "{cycled} cycles");
}

#[test]
fn cycles_catch_an_unmap_that_is_skipped() {
    let report = run(Breakage::SkipUnmap, &[Suite::Cycles], 1);
    let failed = failed_checks(&report);
    assert!(
        failed.contains(&"no mapping left behind".to_owned())
            && failed.contains(
                &"no fabric resource leaked (windows, LUT entries, aperture, slots)".to_owned()
            ),
        "{}",
        report.summary_table()
    );
}

#[test]
fn cycles_fail_when_the_fabric_cannot_be_observed() {
    let report = run(Breakage::BlindFabric, &[Suite::Cycles], 1);
    let failed = failed_checks(&report);
    let cannot_tell = report
        .checks
        .iter()
        .filter(|c| !c.passed && c.evidence.iter().any(|e| e.contains("cannot tell")))
        .count();
    assert_eq!(
        (
            failed.contains(&"no mapping left behind".to_owned()),
            failed.contains(
                &"no fabric resource leaked (windows, LUT entries, aperture, slots)".to_owned()
            ),
            failed.contains(&"mapped while held".to_owned()),
            cannot_tell > 0,
        ),
        (true, true, true, true),
        "{}",
        report.summary_table()
    );
}

#[test]
fn cycles_catch_a_reset_that_does_not_reset() {
    let report = run(Breakage::ResetSkipped, &[Suite::Cycles], 1);
    let failed = failed_checks(&report);
    assert!(
        failed.contains(&"returned to available".to_owned())
            || failed.contains(&"config space at post-reset baseline".to_owned()),
        "{}",
        report.summary_table()
    );
}

#[test]
fn cycles_catch_a_lender_driver_that_is_not_restored() {
    let report = run(Breakage::SkipRestore, &[Suite::Cycles], 1);
    assert_eq!(
        failed_checks(&report),
        vec!["lender's driver as before".to_owned()],
        "{}",
        report.summary_table()
    );
}

#[test]
fn isolation_catches_an_unmap_that_is_skipped() {
    let report = run(Breakage::SkipUnmap, &[Suite::Isolation], 1);
    let failed = failed_checks(&report);
    assert!(
        failed.contains(&"the former holder is refused after release".to_owned())
            && failed.contains(&"the device's DMA is refused after release".to_owned()),
        "{}",
        report.summary_table()
    );
}

#[test]
fn reset_passes_with_siblings_and_catches_a_bus_reset_under_a_lent_sibling() {
    let sound = run_on(SIBLINGS, Breakage::None, &[Suite::Reset], 1);
    let broken = run_on(SIBLINGS, Breakage::PrefersBusReset, &[Suite::Reset], 1);
    let sibling_checks = sound
        .checks
        .iter()
        .filter(|c| c.name == "no bus reset while a sibling is lent")
        .count();
    assert_eq!(
        (sound.passed(), sibling_checks, failed_checks(&broken)),
        (
            true,
            2,
            vec!["no bus reset while a sibling is lent".to_owned()]
        ),
        "{}\n{}",
        sound.summary_table(),
        broken.summary_table()
    );
}

#[test]
fn recovery_catches_a_controller_that_does_not_resume() {
    let report = run(Breakage::NoResume, &[Suite::Recovery], 1);
    let failed = failed_checks(&report);
    assert!(
        failed.contains(
            &"controller killed mid-lend: the next controller finished the lend".to_owned()
        ),
        "{}",
        report.summary_table()
    );
}

#[test]
fn recovery_catches_an_unmap_that_is_skipped() {
    let report = run(Breakage::SkipUnmap, &[Suite::Recovery], 1);
    let failed = failed_checks(&report);
    assert!(
        failed.contains(&"borrower crash: no mapping left".to_owned())
            && failed.contains(&"lender crash: no mapping left".to_owned()),
        "{}",
        report.summary_table()
    );
}

#[test]
fn rebind_catches_a_release_that_forces_a_device_in_use() {
    let report = run(Breakage::ForceRelease, &[Suite::Rebind], 1);
    let failed = failed_checks(&report);
    assert!(
        failed.contains(&"release of a device in use waits and reports BUSY".to_owned())
            && failed.contains(&"nothing forced while in use".to_owned()),
        "{}",
        report.summary_table()
    );
}

#[test]
fn load_catches_an_unmap_that_is_skipped() {
    let report = run(Breakage::SkipUnmap, &[Suite::Load], 2);
    let failed = failed_checks(&report);
    assert!(
        failed.contains(&"cycle under load ends available and unmapped".to_owned()),
        "{}",
        report.summary_table()
    );
}

/// Without a data path to reach, the data-path suite says so as a failed check (it never passes
/// silently on a target it could not exercise).
#[test]
fn the_data_path_suite_fails_where_there_is_no_data_path() {
    let report = run(Breakage::None, &[Suite::DataPath], 1);
    assert_eq!(
        (report.passed(), failed_checks(&report)),
        (false, vec!["a data path to validate".to_owned()])
    );
}
