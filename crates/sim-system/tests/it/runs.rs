use pcipool_sim::FabricDesc;
use pcipool_sim_system::{Config, Mutant, RunError, run};

const LAB: &str = include_str!("../../../../fabrics/lab-4.toml");

/// Steps per run: enough for every fault verb and many lends, returns and restarts in debug builds.
const STEPS: u64 = 1_500;

fn config(seed: u64, mutant: Mutant) -> Config {
    Config {
        seed,
        steps: STEPS,
        desc: FabricDesc::parse(LAB).expect("lab parses"),
        faults: true,
        mutant,
    }
}

#[test]
fn a_faulty_run_holds_every_invariant_and_exercises_the_system() {
    let summary = run(&config(3, Mutant::None)).map_err(|e| e.to_string());
    let s = summary.clone().unwrap_or_default();
    let kinds = s.faults.len();
    assert_eq!(
        (
            summary.is_ok(),
            s.granted > 30,
            s.released > 10,
            s.expired > 3,
            s.restarts > 10,
            kinds >= 6
        ),
        (true, true, true, true, true, true),
        "{summary:?}"
    );
}

#[test]
fn the_same_seed_gives_the_same_last_line() {
    let line = |seed| {
        run(&config(seed, Mutant::None))
            .map(|s| s.last_line())
            .map_err(|e| e.to_string())
    };
    let (a, b, other) = (line(11), line(11), line(12));
    assert_eq!((a.is_ok(), a == b, a != other), (true, true, true), "{a:?}");
}

#[test]
fn an_unmap_that_is_skipped_is_caught() {
    let result = run(&config(3, Mutant::SkipUnmap));
    let caught =
        matches!(&result, Err(RunError::Violation(v)) if v.what.contains("no longer holds"));
    assert!(caught, "{result:?}");
}

#[test]
fn a_dropped_quarantine_write_is_caught() {
    let result = run(&config(3, Mutant::DropQuarantine));
    assert!(matches!(result, Err(RunError::Violation(_))), "{result:?}");
}
