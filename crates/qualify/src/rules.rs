//! The rules. Each is a plain function from the facts to findings for one access model, listed in
//! [`RULES`] so the table is the one place that says what qualification checks. Severities follow the
//! sourced facts in `docs/background.md` (cited per rule).

use pcipool_pcie::{ResetMethod, regs};

use crate::facts::{DeviceContext, IommuMode, NativeDriver, PlatformFacts};
use crate::finding::{AccessModel, Code, Finding, Severity};
use crate::profile::{AdapterProfile, fit};

/// What the rules look at.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The device and its surroundings.
    pub device: &'a DeviceContext,
    /// The lender platform.
    pub platform: &'a PlatformFacts,
    /// The adapter profile used on both sides.
    pub profile: &'a AdapterProfile,
    /// Requested DMA window (borrower memory the device must reach), bytes.
    pub dma_window: u64,
}

/// A named rule.
pub struct Rule {
    /// What it checks, for documentation.
    pub name: &'static str,
    /// The check.
    pub check: fn(&Input<'_>, AccessModel) -> Vec<Finding>,
}

/// Every rule, in report order (safety first).
pub const RULES: &[Rule] = &[
    Rule {
        name: "safety: root filesystem, mounts, default route",
        check: safety,
    },
    Rule {
        name: "safety: the lender's own fabric path",
        check: fabric_path,
    },
    Rule {
        name: "device kind: endpoints only",
        check: endpoint,
    },
    Rule {
        name: "reset behaviour and side effects",
        check: reset,
    },
    Rule {
        name: "IOMMU policy and groups",
        check: iommu,
    },
    Rule {
        name: "native driver on the borrower",
        check: native_driver,
    },
    Rule {
        name: "driver binding controls",
        check: binding_controls,
    },
    Rule {
        name: "interrupts across the NTB",
        check: interrupts,
    },
    Rule {
        name: "SR-IOV for the vf model",
        check: sriov,
    },
    Rule {
        name: "lender-side peer-to-peer path",
        check: p2p,
    },
    Rule {
        name: "NTB mapping: BARs and DMA window",
        check: mapping,
    },
];

fn one(f: Finding) -> Vec<Finding> {
    vec![f]
}

/// Never lend what keeps the lender alive. Not overridable for the root filesystem.
fn safety(i: &Input<'_>, _: AccessModel) -> Vec<Finding> {
    let d = i.device;
    let mut out = Vec::new();
    if d.backs_root_fs {
        out.push(
            Finding::new(
                Code::BacksRootFs,
                Severity::Fail,
                "the lender's root filesystem lives on this device",
                "never pool it; choose another device",
            )
            .with("mount_points", d.mount_points.join(",")),
        );
    } else if !d.mount_points.is_empty() {
        out.push(
            Finding::new(
                Code::BacksMountedFs,
                Severity::Fail,
                "filesystems on this device are mounted on the lender",
                "unmount them (and remove them from fstab) before pooling",
            )
            .with("mount_points", d.mount_points.join(",")),
        );
    }
    if d.backs_default_route {
        out.push(Finding::new(
            Code::BacksDefaultRoute,
            Severity::Fail,
            "the lender's default route goes through this device",
            "move the default route to another interface before pooling",
        ));
    }
    out
}

fn fabric_path(i: &Input<'_>, _: AccessModel) -> Vec<Finding> {
    if !i.device.is_fabric_path {
        return Vec::new();
    }
    one(Finding::new(
        Code::FabricPathDevice,
        Severity::Fail,
        "this is the lender's NTB adapter or a bridge above it: lending it cuts the fabric",
        "never pool fabric infrastructure",
    ))
}

fn endpoint(i: &Input<'_>, _: AccessModel) -> Vec<Finding> {
    let f = &i.device.facts;
    // Host bridges, ISA bridges and other class-06 functions are platform plumbing too.
    if !f.is_bridge() && f.class.base != 0x06 {
        return Vec::new();
    }
    one(Finding::new(
        Code::NotAnEndpoint,
        Severity::Fail,
        "bridges and switch ports are not lent; the endpoints below them are",
        "qualify the endpoint functions instead",
    )
    .with("header_type", format!("{:?}", f.header_type)))
}

/// Lend and vf hand the device to a new borrower each time, so it must be reset in between
/// (TOCS sec. 6: "resetting it every time it is reassigned"). Shared access resets through its
/// manager process, so a missing reset is a warning there.
fn reset(i: &Input<'_>, model: AccessModel) -> Vec<Finding> {
    let d = i.device;
    if d.facts.is_bridge() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let methods: Vec<String> = d.reset_methods.iter().map(ToString::to_string).collect();
    let source = if d.reset_methods_from_kernel {
        "kernel reset_method"
    } else {
        "derived"
    };
    let busy: Vec<String> = d
        .bus_siblings
        .iter()
        .filter(|s| s.in_use)
        .map(|s| s.bdf.to_string())
        .collect();
    let function_level = d.reset_methods.iter().any(|m| !m.affects_siblings());
    let has_bus = d.reset_methods.contains(&ResetMethod::Bus);
    if d.reset_methods.is_empty() {
        let severity = if model == AccessModel::Shared {
            Severity::Warn
        } else {
            Severity::Fail
        };
        out.push(
            Finding::new(
                Code::ResetNone,
                severity,
                "no reset method: state left by one borrower would reach the next",
                "put the device alone behind its bridge (enables bus reset) or use a device with FLR",
            )
            .with("reset_methods", "none")
            .with("source", source)
            .with("bus_siblings", d.bus_siblings.len()),
        );
    } else if !function_level && has_bus {
        out.push(
            Finding::new(
                Code::ResetBusOnly,
                Severity::Warn,
                "only a secondary bus reset: it resets everything below the parent bridge",
                "keep the device alone behind its bridge; expect a slower return",
            )
            .with("reset_methods", methods.join(","))
            .with("source", source),
        );
    }
    // The kernel refuses a bus reset while other functions share the bus, so with no function-level
    // reset a device under a bridge with busy siblings cannot be reset at all without disturbing them.
    let under_bridge = !d.upstream_path.is_empty();
    let needs_bus = !function_level && under_bridge;
    if !busy.is_empty() && (has_bus || needs_bus) {
        let severity = if function_level {
            Severity::Warn
        } else {
            Severity::Fail
        };
        out.push(
            Finding::new(
                Code::BusResetSiblingsBusy,
                severity,
                "a bus reset would also reset functions that are in use",
                "move the busy functions elsewhere, or rely on a function-level reset only",
            )
            .with("busy_siblings", busy.join(","))
            .with(
                "reset_methods",
                if methods.is_empty() {
                    "none".to_owned()
                } else {
                    methods.join(",")
                },
            ),
        );
    }
    if !d.reset_methods_from_kernel {
        out.push(
            Finding::new(
                Code::ResetMethodsDerived,
                Severity::Info,
                "reset methods derived from config space (this kernel predates sysfs reset_method)",
                "use Linux 5.15 or newer for the kernel's own list",
            )
            .with("reset_methods", methods.join(",")),
        );
    }
    out
}

/// TOCS sec. 8.3: without an IOMMU the borrower's DMA window must cover all its RAM and nothing isolates
/// the device's DMA on the lender; a shared group means the whole group moves together (VFIO viability).
fn iommu(i: &Input<'_>, model: AccessModel) -> Vec<Finding> {
    let d = i.device;
    let mut out = Vec::new();
    match i.platform.iommu {
        IommuMode::Off => out.push(
            Finding::new(
                Code::IommuOff,
                Severity::Warn,
                "no IOMMU on the lender: the device's DMA is not confined",
                "enable VT-d/AMD-Vi (intel_iommu=on / amd_iommu=on) on all hosts",
            )
            .with("iommu", &i.platform.iommu_evidence),
        ),
        IommuMode::Passthrough => out.push(
            Finding::new(
                Code::IommuPassthrough,
                Severity::Warn,
                "the IOMMU is in pass-through mode: no DMA isolation between devices",
                "boot with iommu.passthrough=0 (translated mode) for isolation",
            )
            .with("iommu", &i.platform.iommu_evidence),
        ),
        IommuMode::Translated | IommuMode::Unknown => {}
    }
    let endpoints: Vec<String> = d
        .group_peers
        .iter()
        .filter(|p| !p.is_bridge)
        .map(|p| p.bdf.to_string())
        .collect();
    if !endpoints.is_empty() && model != AccessModel::Shared {
        out.push(
            Finding::new(
                Code::IommuGroupShared,
                Severity::Fail,
                "other endpoints share this device's IOMMU group, so it cannot be isolated alone",
                "lend the whole group together, or enable ACS / move the card to a slot with its own group",
            )
            .with("iommu_group", d.iommu_group.map_or_else(|| "-".to_owned(), |g| g.to_string()))
            .with("group_peers", endpoints.join(",")),
        );
    }
    out
}

/// Device Lending binds the borrower's native, unmodified driver; shared access brings its own.
fn native_driver(i: &Input<'_>, model: AccessModel) -> Vec<Finding> {
    if model == AccessModel::Shared || i.device.facts.is_bridge() {
        return Vec::new();
    }
    match &i.device.native_driver {
        NativeDriver::Found(_) => Vec::new(),
        NativeDriver::NotFound => one(Finding::new(
            Code::NoNativeDriver,
            Severity::Fail,
            "no driver on the borrower matches this device",
            "install the driver module on the borrower, or use the shared access model",
        )),
        NativeDriver::Unknown => one(Finding::new(
            Code::NativeDriverUnknown,
            Severity::Warn,
            "the borrower's drivers were not checked",
            "pass --borrower-modules with the borrower's modules.alias (or its module directory)",
        )),
    }
}

fn binding_controls(i: &Input<'_>, model: AccessModel) -> Vec<Finding> {
    let mut out = Vec::new();
    if !i.platform.driver_override && model != AccessModel::Shared {
        out.push(Finding::new(
            Code::DriverOverrideUnsupported,
            Severity::Warn,
            "no driver_override in sysfs: the lender cannot keep its own driver off the device",
            "use Linux 3.16 or newer",
        ));
    }
    if let Some(driver) = &i.device.driver {
        out.push(
            Finding::new(
                Code::LocalDriverBound,
                Severity::Info,
                "a lender driver is bound; it is unbound when the device becomes available",
                "stop local users first (unmount, stop applications)",
            )
            .with("driver", driver),
        );
    }
    out
}

/// TOCS sec. 4.2/8.4: bare-metal lending delivers MSI/MSI-X through a mapped window; INTx cannot cross.
fn interrupts(i: &Input<'_>, model: AccessModel) -> Vec<Finding> {
    let f = &i.device.facts;
    if model == AccessModel::Shared || f.is_bridge() {
        return Vec::new();
    }
    let msi = f.capability(regs::CAP_ID_MSI).is_some() || f.capability(regs::CAP_ID_MSIX).is_some();
    if msi || f.interrupt_pin.is_none() {
        return Vec::new();
    }
    one(Finding::new(
        Code::IntxOnly,
        Severity::Fail,
        "the device has only legacy INTx interrupts, which cannot be delivered across an NTB",
        "use a device with MSI or MSI-X",
    ))
}

fn sriov(i: &Input<'_>, model: AccessModel) -> Vec<Finding> {
    if model != AccessModel::Vf || i.device.is_virtual_function {
        return Vec::new();
    }
    let mut out = Vec::new();
    match i.device.facts.sriov() {
        None => out.push(Finding::new(
            Code::SriovAbsent,
            Severity::Fail,
            "no SR-IOV capability: there are no virtual functions to lend",
            "use the lend model for the whole device",
        )),
        Some(s) if !i.platform.sriov_support => out.push(
            Finding::new(
                Code::SriovUnsupportedKernel,
                Severity::Fail,
                "the device has SR-IOV but the kernel exposes no sriov_* controls",
                "use a kernel built with CONFIG_PCI_IOV",
            )
            .with("total_vfs", s.total_vfs),
        ),
        Some(_) => {}
    }
    out
}

/// Linux p2pdma trusts these host bridges to route P2P between root ports
/// (`drivers/pci/p2pdma.c`, `pci_p2pdma_whitelist`): Intel Xeon E5/E7 v1-v3 (same host bridge only),
/// Skylake-E, Ice Lake-SP. It also trusts any AMD CPU of family 17h (Zen) or later
/// (`cpu_supports_p2pdma`), which [`p2p`] checks from `/proc/cpuinfo`.
pub const P2P_TRUSTED_HOST_BRIDGES: &[(u16, u16)] = &[
    (0x8086, 0x3c00),
    (0x8086, 0x3c01),
    (0x8086, 0x2f00),
    (0x8086, 0x2f01),
    (0x8086, 0x2030),
    (0x8086, 0x2031),
    (0x8086, 0x2032),
    (0x8086, 0x2033),
    (0x8086, 0x2020),
    (0x8086, 0x09a2),
];

/// TOCS sec. 8.3: the lender must route P2P between its NTB and the device, best through a switch.
fn p2p(i: &Input<'_>, _: AccessModel) -> Vec<Finding> {
    let d = i.device;
    if d.facts.is_bridge() || d.ntb_path.is_empty() {
        return Vec::new();
    }
    let common_switch = d
        .upstream_path
        .iter()
        .find(|hop| hop.switch_port && d.ntb_path.contains(&hop.bdf));
    let mut out = Vec::new();
    if let Some(hop) = common_switch {
        out.push(
            Finding::new(
                Code::P2pViaSwitch,
                Severity::Info,
                "device and NTB adapter share a switch: P2P stays off the root complex",
                "none",
            )
            .with("common_bridge", hop.bdf),
        );
        let redirect: Vec<String> = d
            .upstream_path
            .iter()
            .take_while(|h| h.bdf != hop.bdf)
            .filter(|h| h.acs_request_redirect == Some(true))
            .map(|h| h.bdf.to_string())
            .collect();
        if !redirect.is_empty() {
            out.push(
                Finding::new(
                    Code::AcsRedirectForcesRc,
                    Severity::Warn,
                    "ACS request redirect below the shared switch sends P2P up to the root complex",
                    "clear ACS P2P redirect on those ports (pci=disable_acs_redir=...) if isolation allows",
                )
                .with("ports", redirect.join(",")),
            );
        }
        return out;
    }
    let amd_zen = i
        .platform
        .cpu
        .as_ref()
        .is_some_and(|(vendor, family)| vendor == "AuthenticAMD" && *family >= 0x17);
    let trusted = amd_zen
        || i.platform
            .host_bridge
            .is_some_and(|hb| P2P_TRUSTED_HOST_BRIDGES.contains(&hb));
    let host_bridge = i
        .platform
        .host_bridge
        .map_or_else(|| "unknown".to_owned(), |(v, d)| format!("{v:04x}:{d:04x}"));
    if trusted {
        out.push(
            Finding::new(
                Code::P2pThroughTrustedRc,
                Severity::Info,
                "P2P crosses the root complex, which Linux trusts to forward it",
                "for best bandwidth put device and adapter behind one switch",
            )
            .with("host_bridge", host_bridge),
        );
    } else {
        out.push(
            Finding::new(
                Code::P2pThroughUntrustedRc,
                Severity::Warn,
                "P2P must cross a root complex not known to forward peer-to-peer traffic",
                "put device and NTB adapter behind one PCIe switch, or validate P2P on this platform",
            )
            .with("host_bridge", host_bridge)
            .with(
                "cpu",
                i.platform.cpu.as_ref().map_or_else(|| "unknown".to_owned(), |(v, f)| format!("{v} family {f:#x}")),
            ),
        );
    }
    out
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes;
    let mut u = 0;
    while v >= 1024 && v.is_multiple_of(1024) && u + 1 < UNITS.len() {
        v /= 1024;
        u += 1;
    }
    format!("{v} {}", UNITS[u])
}

/// TOCS sec. 8.6: the NTB window bounds which BARs a borrower can map and how large DMA windows can be.
/// Resizable BARs are counted at their smallest supported size (the lender can shrink them before lending).
fn mapping(i: &Input<'_>, model: AccessModel) -> Vec<Finding> {
    let f = &i.device.facts;
    if f.is_bridge() {
        return Vec::new();
    }
    let smallest: Vec<(u8, u64)> = f
        .resizable_bar()
        .map(|r| {
            r.entries
                .iter()
                .filter_map(|e| Some((e.bar, *e.supported_sizes.first()?)))
                .collect()
        })
        .unwrap_or_default();
    let bars: Vec<(String, u64)> = if model == AccessModel::Vf {
        f.sriov()
            .map(|s| {
                s.vf_bars
                    .iter()
                    .filter_map(|b| Some((format!("VF BAR {}", b.index), b.size?)))
                    .collect()
            })
            .unwrap_or_default()
    } else {
        f.bars
            .iter()
            .filter(|b| b.kind != pcipool_pcie::BarKind::Io)
            .filter_map(|b| {
                let size = b.size?;
                let size = smallest
                    .iter()
                    .find(|(bar, _)| *bar == b.index)
                    .map_or(size, |(_, s)| size.min(*s));
                Some((format!("BAR {}", b.index), size))
            })
            .collect()
    };
    let mut out = Vec::new();
    let placed = fit(i.profile, &bars);
    if let Some((label, size)) = placed.unplaced.iter().max_by_key(|(_, s)| *s) {
        let fitting: Vec<String> = AdapterProfile::builtin()
            .into_iter()
            .filter(|p| fit(p, &bars).ok())
            .map(|p| p.name)
            .collect();
        out.push(
            Finding::new(
                Code::BarExceedsWindow,
                Severity::Fail,
                format!(
                    "{label} ({}) does not fit the {} windows",
                    human(*size),
                    i.profile.name
                ),
                format!(
                    "enlarge the NTB window to at least {} or use a profile that fits: {}",
                    human(placed.needed_window),
                    if fitting.is_empty() {
                        "none shipped".to_owned()
                    } else {
                        fitting.join(", ")
                    }
                ),
            )
            .with("largest_unfit", format!("{label}={}", human(*size)))
            .with("needed_window", human(placed.needed_window))
            .with("profile", &i.profile.name)
            .with(
                "bars",
                bars.iter()
                    .map(|(l, s)| format!("{l}={}", human(*s)))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        );
    }
    if model != AccessModel::Shared && i.dma_window > 0 {
        let dma = fit(i.profile, &[("DMA window".to_owned(), i.dma_window)]);
        if !dma.ok() {
            out.push(
                Finding::new(
                    Code::DmaWindowExceeds,
                    Severity::Fail,
                    format!(
                        "a {} DMA window does not fit the {} windows",
                        human(i.dma_window),
                        i.profile.name
                    ),
                    "request a smaller DMA window (borrower IOMMU on) or enlarge the NTB window",
                )
                .with("dma_window", human(i.dma_window))
                .with("profile", &i.profile.name),
            );
        }
    }
    out
}
