//! The fabric description file (TOML): switches, hosts (optionally replicated with `count`), their adapters
//! and links, and the devices each host lends.
//!
//! ```toml
//! [[switch]]
//! name = "sw0"
//!
//! [[link]]                   # links not owned by a host, e.g. leaf to spine
//! a = "switch:sw0"
//! b = "switch:spine"
//! generation = 3
//! width = 16
//!
//! [[host]]
//! name = "node-{i}"          # {i} becomes 0, 1, ... when count > 1
//! node = 1                   # first node id; each copy takes the next
//! count = 4
//! adapters = ["dolphin-pxh830-32g"]
//! links = ["switch:sw0"]     # where adapter 0 is cabled
//! iommu = "translated"       # off | passthrough | translated
//!
//! [[host.device]]
//! bdf = "0000:03:00.0"       # with count > 1 the bus number increments
//! preset = "nvme"            # nvme | gpu | sriov-nic | fpga | ntb ...
//! reset = "flr"              # flr | flr-slow | flr-hangs | bus-only | none
//! driver = "nvme"            # bound on the lender at start (optional)
//! vfs = 4                    # SR-IOV virtual functions enabled at start (sriov-nic; default 0)
//! ```

use pcipool_fabric::{AdapterProfile, Host, Link, NodeId, Port, Topology, TopologyError};
use pcipool_pcie::Bdf;
use pcipool_qualify::IommuMode;
use serde::Deserialize;

use crate::device::ResetBehaviour;

/// Why a description file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum DescError {
    /// Not valid TOML, or fields of the wrong type.
    #[error("invalid fabric description: {0}")]
    Syntax(String),
    /// An adapter profile name that is not built in.
    #[error("host {host}: unknown adapter profile '{profile}'")]
    UnknownProfile {
        /// Host name.
        host: String,
        /// Profile.
        profile: String,
    },
    /// A device preset that does not exist.
    #[error("host {host}: unknown device preset '{preset}'")]
    UnknownPreset {
        /// Host name.
        host: String,
        /// Preset.
        preset: String,
    },
    /// Replication ran past the address space.
    #[error("host {host}: device {bdf} with count {count} runs past bus 255")]
    DeviceRange {
        /// Host.
        host: String,
        /// First address.
        bdf: Bdf,
        /// Copies.
        count: u32,
    },
    /// A port name that does not parse.
    #[error("host {host}: link '{link}' is not a port")]
    BadLink {
        /// Host.
        host: String,
        /// The text.
        link: String,
    },
    /// Inconsistent topology.
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// Too many hosts or devices for the simulator's limits.
    #[error("{0}")]
    Limit(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSwitch {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDevice {
    bdf: Bdf,
    preset: String,
    #[serde(default)]
    reset: ResetBehaviour,
    #[serde(default)]
    driver: Option<String>,
    #[serde(default = "one")]
    count: u32,
    #[serde(default)]
    vfs: u16,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHost {
    name: String,
    node: u32,
    #[serde(default = "one")]
    count: u32,
    adapters: Vec<String>,
    #[serde(default)]
    links: Vec<String>,
    #[serde(default = "translated")]
    iommu: String,
    #[serde(default, rename = "device")]
    devices: Vec<FileDevice>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDesc {
    #[serde(default, rename = "switch")]
    switches: Vec<FileSwitch>,
    /// Extra links, e.g. between switches.
    #[serde(default, rename = "link")]
    links: Vec<Link>,
    #[serde(default, rename = "host")]
    hosts: Vec<FileHost>,
}

fn one() -> u32 {
    1
}

fn translated() -> String {
    "translated".to_owned()
}

/// One device a host starts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSpec {
    /// Address on the host.
    pub bdf: Bdf,
    /// Preset name.
    pub preset: String,
    /// Reset behaviour.
    pub reset: ResetBehaviour,
    /// Driver bound at start.
    pub driver: Option<String>,
    /// SR-IOV virtual functions enabled at start.
    pub vfs: u16,
}

/// One host with its devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    /// Node id.
    pub node: NodeId,
    /// Name.
    pub name: String,
    /// IOMMU mode.
    pub iommu: IommuMode,
    /// Devices.
    pub devices: Vec<DeviceSpec>,
}

/// A parsed description.
#[derive(Debug, Clone)]
pub struct FabricDesc {
    /// The topology.
    pub topology: Topology,
    /// Hosts and their devices.
    pub hosts: Vec<HostSpec>,
}

/// The built-in 4-host lab (`fabrics/lab-4.toml`): what `pcipool dev`, `server` and `validate` run on
/// when no description is given.
pub const LAB_4: &str = include_str!("../../../fabrics/lab-4.toml");

/// The built-in 64-host rack (`fabrics/rack-64.toml`): the API benchmark's default.
pub const RACK_64: &str = include_str!("../../../fabrics/rack-64.toml");

/// Why a description could not be loaded from a file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file was read but does not describe a fabric.
    #[error("{name}: {source}")]
    Invalid {
        /// The file, or the built-in description's name.
        name: String,
        /// What is wrong.
        source: DescError,
    },
}

/// A description and the name it was loaded under (a path, or `built-in lab-4`).
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The file's path, or the built-in description's name.
    pub name: String,
    /// The description.
    pub desc: FabricDesc,
}

/// Hard limits that keep a hostile file from exhausting memory.
pub const MAX_HOSTS: u32 = 65_536;
/// Devices per host.
pub const MAX_DEVICES_PER_HOST: u32 = 4096;

impl FabricDesc {
    /// Reads and parses `file`, or the built-in lab when there is none.
    ///
    /// # Errors
    /// [`LoadError`] naming the file.
    pub fn load(file: Option<&std::path::Path>) -> Result<Loaded, LoadError> {
        Self::load_or(file, "built-in lab-4", LAB_4)
    }

    /// Reads and parses `file`, or the built-in `default` text (named `default_name`) when there is none.
    ///
    /// # Errors
    /// [`LoadError`] naming the file.
    pub fn load_or(
        file: Option<&std::path::Path>,
        default_name: &str,
        default: &str,
    ) -> Result<Loaded, LoadError> {
        let (name, text) = match file {
            Some(p) => (
                p.display().to_string(),
                std::fs::read_to_string(p).map_err(|source| LoadError::Read {
                    path: p.display().to_string(),
                    source,
                })?,
            ),
            None => (default_name.to_owned(), default.to_owned()),
        };
        let desc = Self::parse(&text).map_err(|source| LoadError::Invalid {
            name: name.clone(),
            source,
        })?;
        Ok(Loaded { name, desc })
    }

    /// Parses a description.
    ///
    /// # Errors
    /// [`DescError`] naming what is wrong.
    pub fn parse(text: &str) -> Result<Self, DescError> {
        let file: FileDesc = toml::from_str(text).map_err(|e| DescError::Syntax(e.to_string()))?;
        let mut hosts = Vec::new();
        let mut specs = Vec::new();
        let mut links = file.links.clone();
        let total: u64 = file.hosts.iter().map(|h| u64::from(h.count)).sum();
        if total > u64::from(MAX_HOSTS) {
            return Err(DescError::Limit(format!(
                "{total} hosts exceed the limit of {MAX_HOSTS}"
            )));
        }
        for h in &file.hosts {
            let iommu = match h.iommu.as_str() {
                "off" => IommuMode::Off,
                "passthrough" => IommuMode::Passthrough,
                "translated" => IommuMode::Translated,
                other => {
                    return Err(DescError::Syntax(format!(
                        "host {}: iommu '{other}'",
                        h.name
                    )));
                }
            };
            let profiles: Vec<AdapterProfile> = h
                .adapters
                .iter()
                .map(|p| {
                    AdapterProfile::named(p).ok_or_else(|| DescError::UnknownProfile {
                        host: h.name.clone(),
                        profile: p.clone(),
                    })
                })
                .collect::<Result<_, _>>()?;
            let device_total: u64 = h.devices.iter().map(|d| u64::from(d.count)).sum();
            if device_total > u64::from(MAX_DEVICES_PER_HOST) {
                return Err(DescError::Limit(format!(
                    "host {}: {device_total} devices exceed {MAX_DEVICES_PER_HOST}",
                    h.name
                )));
            }
            for i in 0..h.count {
                let node = NodeId(
                    h.node
                        .checked_add(i)
                        .ok_or_else(|| DescError::Limit("node id overflow".into()))?,
                );
                let name = h.name.replace("{i}", &i.to_string());
                let mut devices = Vec::new();
                for d in &h.devices {
                    if !crate::presets::exists(&d.preset) {
                        return Err(DescError::UnknownPreset {
                            host: name.clone(),
                            preset: d.preset.clone(),
                        });
                    }
                    for k in 0..d.count {
                        let bus = u32::from(d.bdf.bus()) + k;
                        let bus = u8::try_from(bus).map_err(|_| DescError::DeviceRange {
                            host: name.clone(),
                            bdf: d.bdf,
                            count: d.count,
                        })?;
                        let bdf = Bdf::new(d.bdf.domain(), bus, d.bdf.device(), d.bdf.function())
                            .map_err(|e| DescError::Syntax(e.to_string()))?;
                        devices.push(DeviceSpec {
                            bdf,
                            preset: d.preset.clone(),
                            reset: d.reset,
                            driver: d.driver.clone(),
                            vfs: d.vfs,
                        });
                    }
                }
                for l in &h.links {
                    let b: Port = l.parse().map_err(|_| DescError::BadLink {
                        host: name.clone(),
                        link: l.clone(),
                    })?;
                    links.push(Link {
                        a: Port::Adapter(pcipool_fabric::AdapterId { node, index: 0 }),
                        b,
                        generation: 3,
                        width: 8,
                    });
                }
                hosts.push(Host {
                    node,
                    name: name.clone(),
                    adapters: profiles.clone(),
                });
                specs.push(HostSpec {
                    node,
                    name,
                    iommu,
                    devices,
                });
            }
        }
        let topology = Topology::new(
            hosts,
            file.switches.into_iter().map(|s| s.name).collect(),
            links,
        )?;
        Ok(Self {
            topology,
            hosts: specs,
        })
    }
}
