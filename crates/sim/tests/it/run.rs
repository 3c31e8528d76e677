use pcipool_sim::run::{FaultKind, FaultSet, run};
use pcipool_sim::{FabricDesc, Sim};

fn fabric(name: &str) -> FabricDesc {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fabrics")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("shipped fabric file");
    FabricDesc::parse(&text).expect("shipped fabric parses")
}

fn seeds() -> Vec<u64> {
    // PCIPOOL_SIM_SEED pins one seed (to replay a failure); PCIPOOL_SIM_RUNS widens the sweep.
    if let Some(seed) = std::env::var("PCIPOOL_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![seed];
    }
    let runs = std::env::var("PCIPOOL_SIM_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8u64);
    (1..=runs).collect()
}

#[test]
fn lab_runs_with_all_faults_keep_invariants() {
    let all: FaultSet = "all".parse().expect("valid");
    let failures: Vec<String> = seeds()
        .into_iter()
        .filter_map(|seed| {
            let mut sim = Sim::new(&fabric("lab-4.toml"), seed).expect("builds");
            let s = run(&mut sim, 3000, &all);
            s.violation.map(|v| {
                format!("seed {seed}: step {} {} ({}); replay: pcipool sim run --seed {seed} --steps 3000", v.step, v.detail, v.action)
            })
        })
        .collect();
    assert_eq!(failures, Vec::<String>::new());
}

#[test]
fn same_seed_gives_same_summary_and_hash() {
    let all: FaultSet = "all".parse().expect("valid");
    let once = |seed| {
        let mut sim = Sim::new(&fabric("lab-4.toml"), seed).expect("builds");
        run(&mut sim, 2000, &all)
    };
    let (a, b) = (once(42), once(42));
    assert_eq!((a == b, a.hash != once(43).hash), (true, true));
}

#[test]
fn every_fault_kind_is_injected_in_a_long_run() {
    let all: FaultSet = "all".parse().expect("valid");
    let mut sim = Sim::new(&fabric("lab-4.toml"), 9).expect("builds");
    let s = run(&mut sim, 5000, &all);
    let kinds: Vec<&str> = FaultKind::ALL
        .iter()
        .map(|k| k.name())
        .filter(|k| !s.faults.contains_key(*k))
        .collect();
    assert_eq!(kinds, Vec::<&str>::new());
}

#[test]
fn no_faults_means_no_fencing() {
    let none: FaultSet = "none".parse().expect("valid");
    let mut sim = Sim::new(&fabric("lab-4.toml"), 5).expect("builds");
    let s = run(&mut sim, 2000, &none);
    assert_eq!(
        (
            s.fenced,
            s.faults.len(),
            s.violation.is_none(),
            s.granted > 0
        ),
        (0, 0, true, true)
    );
}

#[test]
fn unknown_fault_name_is_rejected() {
    assert_eq!(
        "crash,meteor".parse::<FaultSet>(),
        Err(pcipool_sim::run::UnknownFault("meteor".into()))
    );
}

#[test]
fn shipped_fabrics_have_the_advertised_size() {
    let count = |d: &FabricDesc| {
        (
            d.hosts.len(),
            d.hosts.iter().map(|h| h.devices.len()).sum::<usize>(),
        )
    };
    assert_eq!(
        (
            count(&fabric("lab-4.toml")),
            count(&fabric("rack-64.toml")),
            count(&fabric("fabric-1024.toml"))
        ),
        ((4, 5), (64, 128), (1024, 16384))
    );
}

#[test]
fn rack_run_keeps_invariants() {
    let all: FaultSet = "all".parse().expect("valid");
    let mut sim = Sim::new(&fabric("rack-64.toml"), 3).expect("builds");
    let s = run(&mut sim, 3000, &all);
    assert_eq!(s.violation, None);
}
