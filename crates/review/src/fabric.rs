//! A simulated fabric as the review's source: the fabric file is built into the simulator, each host's
//! devices are qualified and described exactly as its agent would report them (`pcipool_sim_lab`), and
//! the qualification rules run once more per device and model to keep the findings' remedies.

use pcipool_backend::Inventory as _;
use pcipool_qualify::{AccessModel, Input, Severity, Verdict};
use pcipool_sim::{FabricDesc, HostView, Sim};

use crate::ReviewError;
use crate::model::{DevicePart, FindingLine, HostPart, System};

/// The system a fabric description builds, named `source`.
///
/// # Errors
/// [`ReviewError::Fabric`] when the simulator refuses the description.
pub fn system(desc: &FabricDesc, source: &str) -> Result<System, ReviewError> {
    let sim = Sim::new(desc, 1).map_err(|e| ReviewError::Fabric(e.to_string()))?;
    let topology = &desc.topology;
    let aliases = pcipool_sim::presets::driver_aliases();
    let mut hosts = Vec::new();
    for host in topology.hosts() {
        let view = HostView {
            sim: &sim,
            node: host.node,
        };
        let inventory = view.inventory().ok();
        let platform_facts = view.platform_facts();
        let offered = pcipool_sim_lab::qualified_devices(&sim, Some(host.node));
        let devices = offered
            .into_iter()
            .map(|(info, reasons)| {
                let bdf = info.function.unwrap_or(info.fdid.bdf);
                let record = inventory
                    .as_ref()
                    .and_then(|inv| inv.devices.iter().find(|r| r.bdf == bdf));
                let findings = match (&inventory, record, &platform_facts) {
                    (Some(inv), Some(record), Some(platform)) => {
                        let profile = host.adapters.first().cloned().unwrap_or_else(|| {
                            pcipool_qualify::AdapterProfile {
                                name: "none".into(),
                                description: String::new(),
                                direct: None,
                                lut: None,
                                aperture: None,
                                requester_slots: None,
                                sources: Vec::new(),
                            }
                        });
                        let ctx = pcipool_qualify::gather::device_context(
                            inv,
                            record,
                            None,
                            Some(&aliases),
                        );
                        let input = Input {
                            device: &ctx,
                            platform,
                            profile: &profile,
                            dma_window: pcipool_pool::offer::DMA_WINDOW,
                        };
                        findings(&input, record.facts.sriov().is_some())
                    }
                    _ => Vec::new(),
                };
                DevicePart {
                    reset_methods: record
                        .map(|r| r.reset_methods.iter().map(ToString::to_string).collect())
                        .unwrap_or_default(),
                    state: "simulated".into(),
                    reasons,
                    findings,
                    info,
                }
            })
            .collect();
        hosts.push(HostPart {
            node: host.node,
            name: host.name.clone(),
            adapters: host.adapters.iter().map(|a| a.name.clone()).collect(),
            platform: platform_facts.map(|p| {
                crate::platform_of(&p, "simulated (pcipool sim)", env!("CARGO_PKG_VERSION"))
            }),
            agent: "in process (simulated)".into(),
            devices,
        });
    }
    Ok(System {
        source: format!("{source} (simulated)"),
        switches: topology.switches().cloned().collect(),
        links: topology.links().to_vec(),
        hosts,
    })
}

/// The findings that are not passes, for every model (the VF model only for SR-IOV devices: the others
/// simply do not have it).
fn findings(input: &Input<'_>, sriov: bool) -> Vec<FindingLine> {
    AccessModel::ALL
        .into_iter()
        .filter(|m| *m != AccessModel::Vf || sriov)
        .flat_map(|model| {
            let result = pcipool_qualify::qualify(input, model, &[]);
            let judged = result.verdict != Verdict::Pass;
            result
                .findings
                .into_iter()
                .filter(move |f| judged && f.severity != Severity::Info)
                .map(move |f| FindingLine {
                    model: model.to_string(),
                    code: f.code.to_string(),
                    severity: format!("{:?}", f.severity).to_lowercase(),
                    message: f.message,
                    remedy: f.remedy,
                })
        })
        .collect()
}
