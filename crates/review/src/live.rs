//! A running pool as the review's source, read through its API with an operator's token: hosts and
//! their agents, the fabric's switches and links, and every device in full.

use pcipool_client::Client;
use pcipool_fabric::{Link, Port};

use crate::ReviewError;
use crate::model::{DevicePart, HostPart, System};

/// The system the pool at `client`'s address serves.
///
/// # Errors
/// [`ReviewError::Pool`] when a read fails (unreachable, a token that may not read, a link end that
/// does not parse).
pub fn system(client: &Client) -> Result<System, ReviewError> {
    let fail = |source| ReviewError::Pool {
        url: client.base().to_owned(),
        source,
    };
    let hosts = client.hosts().map_err(fail)?;
    let topology = client.topology().map_err(fail)?;
    let devices = client.devices().map_err(fail)?;
    let mut details = Vec::with_capacity(devices.len());
    for d in &devices {
        details.push(client.device(&d.fdid.to_string()).map_err(fail)?);
    }
    let links = topology
        .links
        .iter()
        .map(|l| {
            let port = |text: &str| {
                text.parse::<Port>().map_err(|e| {
                    ReviewError::BadAnswer(format!("{}/v1/topology: {e}", client.base()))
                })
            };
            Ok(Link {
                a: port(&l.a)?,
                b: port(&l.b)?,
                generation: l.generation,
                width: l.width,
            })
        })
        .collect::<Result<Vec<_>, ReviewError>>()?;
    let hosts = hosts
        .into_iter()
        .map(|h| {
            let devices = details
                .iter()
                .filter(|d| d.info.fdid.node == h.node)
                .map(|d| DevicePart {
                    info: d.info.clone(),
                    state: d.state.clone(),
                    reset_methods: Vec::new(),
                    reasons: d.detail["reasons"]
                        .as_array()
                        .map(|r| {
                            r.iter()
                                .filter_map(|x| x.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default(),
                    findings: Vec::new(),
                })
                .collect();
            HostPart {
                node: h.node,
                name: h.name,
                adapters: h.adapters,
                platform: None,
                agent: h.agent,
                devices,
            }
        })
        .collect();
    Ok(System {
        source: client.base().to_owned(),
        switches: topology.switches,
        links,
        hosts,
    })
}
