//! lspci-style text for decoded facts, device records and host inventories.

use std::fmt::Write as _;

use crate::PciIds;
use pcipool_backend::{DeviceRecord, HostInventory};
use pcipool_pcie::caps::{CapabilityDetail, PciExpress};
use pcipool_pcie::ecaps::{AcsBits, ExtCapabilityDetail};
use pcipool_pcie::{Bar, BarKind, Bdf, DeviceFacts, ResetMethod};

/// 16384 -> "16K", 268435456 -> "256M".
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["", "K", "M", "G", "T", "P", "E"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024 && value.is_multiple_of(1024) && unit + 1 < UNITS.len() {
        value /= 1024;
        unit += 1;
    }
    format!("{value}{}", UNITS[unit])
}

/// `256M`, `1G`, `4096`, `2GiB` -> bytes (the inverse of [`human_size`]).
///
/// # Errors
/// Text that is not a size, an unknown unit, or a size past `u64`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(digits);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("'{text}' is not a size (e.g. 256M, 1G)"))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(format!("'{text}': unknown unit (use K, M, G or T)")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("'{text}' is too large"))
}

fn flag(on: bool) -> char {
    if on { '+' } else { '-' }
}

/// "Samsung ... [144d:a808]".
pub fn id_line(ids: &PciIds, facts: &DeviceFacts) -> String {
    let name = if ids.vendor(facts.vendor_id).is_some() {
        ids.describe(facts.vendor_id, facts.device_id)
    } else {
        "Device".to_owned()
    };
    format!("{name} [{:04x}:{:04x}]", facts.vendor_id, facts.device_id)
}

/// Class name from pci.ids, else the built-in table, else hex.
pub fn class_name(ids: &PciIds, facts: &DeviceFacts) -> String {
    ids.class(facts.class.base, facts.class.sub)
        .or(facts.class_name)
        .map_or_else(
            || format!("Class {:04x}", facts.class.as_u16()),
            str::to_owned,
        )
}

/// "Vendor Device" from pci.ids, else the class name with the ids in hex.
#[must_use]
pub fn device_name(ids: &PciIds, facts: &DeviceFacts) -> String {
    match (
        ids.vendor(facts.vendor_id),
        ids.device(facts.vendor_id, facts.device_id),
    ) {
        (Some(v), Some(name)) => format!("{v} {name}"),
        _ => format!(
            "{} [{:04x}:{:04x}]",
            class_name(ids, facts),
            facts.vendor_id,
            facts.device_id
        ),
    }
}

fn bar_kind(bar: &Bar) -> String {
    match bar.kind {
        BarKind::Io => "I/O ports".to_owned(),
        kind => {
            let width = match kind {
                BarKind::Memory64 => "64-bit",
                BarKind::MemoryBelow1M => "low-1M",
                _ => "32-bit",
            };
            let pref = if bar.prefetchable {
                "prefetchable"
            } else {
                "non-prefetchable"
            };
            format!("memory ({width}, {pref})")
        }
    }
}

fn pcie_line(e: &PciExpress) -> String {
    let mut s = format!(
        "v{} {}: link {} x{} (max {} x{}), FLR{}, MPS {}/{}, MRRS {}, ExtTag{} RlxdOrd{} NoSnoop{}",
        e.version,
        e.port_type,
        e.link.speed,
        e.link.width,
        e.link.max_speed,
        e.link.max_width,
        flag(e.flr_capable),
        e.max_payload,
        e.max_payload_supported,
        e.max_read_request,
        flag(e.extended_tag_enabled),
        flag(e.relaxed_ordering_enabled),
        flag(e.no_snoop_enabled),
    );
    if let Some(slot) = &e.slot {
        let _ = write!(
            s,
            ", slot {} HotPlug{} Surprise{}",
            slot.physical_slot,
            flag(slot.hot_plug_capable),
            flag(slot.hot_plug_surprise)
        );
    }
    if e.ari_forwarding_supported {
        let _ = write!(s, ", ARIFwd{}", flag(e.ari_forwarding_enabled));
    }
    s
}

fn acs(bits: AcsBits) -> String {
    format!(
        "SrcValid{} TransBlk{} ReqRedir{} CmpltRedir{} UpstreamFwd{} EgressCtrl{} DirectTrans{}",
        flag(bits.source_validation),
        flag(bits.translation_blocking),
        flag(bits.request_redirect),
        flag(bits.completion_redirect),
        flag(bits.upstream_forwarding),
        flag(bits.egress_control),
        flag(bits.direct_translated)
    )
}

fn cap_line(detail: &CapabilityDetail) -> String {
    match detail {
        CapabilityDetail::PowerManagement(pm) => {
            format!(
                "v{} D{} NoSoftRst{}",
                pm.version,
                pm.power_state,
                flag(pm.no_soft_reset)
            )
        }
        CapabilityDetail::Msi(m) => format!(
            "Enable{} Count={}/{} 64bit{} Maskable{}",
            flag(m.enabled),
            m.vectors_enabled,
            m.vectors_capable,
            flag(m.address_64bit),
            flag(m.per_vector_masking)
        ),
        CapabilityDetail::MsiX(m) => format!(
            "Enable{} Count={} table BAR{}+{:#x} PBA BAR{}+{:#x}",
            flag(m.enabled),
            m.table_size,
            m.table_bar,
            m.table_offset,
            m.pba_bar,
            m.pba_offset
        ),
        CapabilityDetail::PciExpress(e) => pcie_line(e),
        CapabilityDetail::VendorSpecific { length } => format!("len {length}"),
        CapabilityDetail::SubsystemVendor {
            subsystem_vendor_id,
            subsystem_id,
        } => format!("{subsystem_vendor_id:04x}:{subsystem_id:04x}"),
        CapabilityDetail::EnhancedAllocation(ea) => format!("{} entries", ea.declared_entries),
        CapabilityDetail::AdvancedFeatures(af) => {
            format!("TP{} FLR{}", flag(af.transactions_pending), flag(af.flr))
        }
        CapabilityDetail::Truncated => "<truncated>".to_owned(),
        CapabilityDetail::Other => String::new(),
    }
}

fn ecap_line(detail: &ExtCapabilityDetail) -> String {
    match detail {
        ExtCapabilityDetail::Aer(a) => format!(
            "UESta {:08x} CESta {:08x} ECRCGen{} ECRCChk{}",
            a.uncorrectable_status,
            a.correctable_status,
            flag(a.ecrc_generation_capable),
            flag(a.ecrc_check_capable)
        ),
        ExtCapabilityDetail::VirtualChannel { extended_vc_count } => {
            format!("ExtVC {extended_vc_count}")
        }
        ExtCapabilityDetail::SerialNumber { serial } => {
            let b = serial.to_be_bytes();
            b.iter()
                .map(|x| format!("{x:02x}"))
                .collect::<Vec<_>>()
                .join("-")
        }
        ExtCapabilityDetail::Acs(a) => {
            format!("cap: {} / ctl: {}", acs(a.capability), acs(a.control))
        }
        ExtCapabilityDetail::Ari(a) => format!("next function {}", a.next_function),
        ExtCapabilityDetail::Ats(a) => format!(
            "Enable{} STU {}",
            flag(a.enabled),
            a.smallest_translation_unit
        ),
        ExtCapabilityDetail::SrIov(s) => format!(
            "TotalVFs {} InitialVFs {} NumVFs {} VFEnable{} offset {} stride {} VF id {:04x}, {} VF BARs",
            s.total_vfs,
            s.initial_vfs,
            s.num_vfs,
            flag(s.vf_enabled),
            s.first_vf_offset,
            s.vf_stride,
            s.vf_device_id,
            s.vf_bars.len()
        ),
        ExtCapabilityDetail::ResizableBar(r) => r
            .entries
            .iter()
            .map(|e| {
                let sizes: Vec<String> = e.supported_sizes.iter().map(|s| human_size(*s)).collect();
                format!(
                    "BAR {}: {} of {}",
                    e.bar,
                    human_size(e.current_size),
                    sizes.join(" ")
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        ExtCapabilityDetail::Dpc(d) => format!(
            "trigger {} RPExt{}",
            d.trigger_enable,
            flag(d.root_port_extensions)
        ),
        ExtCapabilityDetail::Ltr(l) => format!(
            "snoop {} ns, no-snoop {} ns",
            l.max_snoop_latency_ns, l.max_no_snoop_latency_ns
        ),
        ExtCapabilityDetail::L1Substates(l) => format!(
            "PCI-PM_L1.2{} PCI-PM_L1.1{} ASPM_L1.2{} ASPM_L1.1{}",
            flag(l.pci_pm_l1_2),
            flag(l.pci_pm_l1_1),
            flag(l.aspm_l1_2),
            flag(l.aspm_l1_1)
        ),
        ExtCapabilityDetail::SecondaryPcie { lane_error_status } => {
            format!("lane errors {lane_error_status:#x}")
        }
        ExtCapabilityDetail::Pasid(p) => format!("width {} Enable{}", p.max_width, flag(p.enabled)),
        ExtCapabilityDetail::Pri(p) => format!("Enable{} capacity {}", flag(p.enabled), p.capacity),
        ExtCapabilityDetail::Ptm(p) => format!(
            "Requester{} Responder{} Root{} Enable{}",
            flag(p.requester),
            flag(p.responder),
            flag(p.root),
            flag(p.enabled)
        ),
        ExtCapabilityDetail::Dvsec(v) => format!(
            "vendor {:04x} id {:04x} rev {}",
            v.vendor_id, v.section_id, v.revision
        ),
        ExtCapabilityDetail::VendorSpecific(v) => format!(
            "id {:04x} rev {} len {}",
            v.section_id, v.revision, v.length
        ),
        ExtCapabilityDetail::Doe { interrupt_support } => {
            format!("IntSup{}", flag(*interrupt_support))
        }
        ExtCapabilityDetail::PhysicalLayer {
            capabilities,
            status,
        } => format!("cap {capabilities:#x} status {status:#x}"),
        ExtCapabilityDetail::Truncated => "<truncated>".to_owned(),
        ExtCapabilityDetail::Other => String::new(),
    }
}

/// The body of a device's decode (everything below its title line).
pub fn facts_body(out: &mut String, ids: &PciIds, facts: &DeviceFacts, resets: &[ResetMethod]) {
    if let (Some(sv), Some(sd)) = (facts.subsystem_vendor_id, facts.subsystem_id) {
        let name = ids
            .subsystem(facts.vendor_id, facts.device_id, sv, sd)
            .map(str::to_owned)
            .or_else(|| ids.vendor(sv).map(|v| format!("{v} Device {sd:04x}")))
            .unwrap_or_else(|| "Device".to_owned());
        let _ = writeln!(out, "\tSubsystem: {name} [{sv:04x}:{sd:04x}]");
    }
    let _ = writeln!(
        out,
        "\tControl: I/O{} Mem{} BusMaster{} DisINTx{}  Header: {:?}{}",
        flag(facts.command & 0x1 != 0),
        flag(facts.command & 0x2 != 0),
        flag(facts.command & 0x4 != 0),
        flag(facts.command & 0x400 != 0),
        facts.header_type,
        if facts.multifunction {
            " (multi-function)"
        } else {
            ""
        }
    );
    if let Some(b) = &facts.bridge {
        let _ = writeln!(
            out,
            "\tBus: primary={:02x}, secondary={:02x}, subordinate={:02x}",
            b.primary_bus, b.secondary_bus, b.subordinate_bus
        );
        for (name, w) in [
            ("I/O", b.io_window),
            ("Memory", b.memory_window),
            ("Prefetchable", b.prefetchable_window),
        ] {
            if let Some(w) = w {
                let _ = writeln!(out, "\t{name} behind bridge: {:#x}-{:#x}", w.base, w.limit);
            }
        }
    }
    for bar in &facts.bars {
        let size = bar
            .size
            .map(|s| format!(" [size={}]", human_size(s)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "\tRegion {}: {} at {:#x}{size}",
            bar.index,
            bar_kind(bar),
            bar.address
        );
    }
    if let Some(rom) = &facts.expansion_rom {
        let size = rom
            .size
            .map(|s| format!(" [size={}]", human_size(s)))
            .unwrap_or_default();
        let state = if rom.enabled { "" } else { " [disabled]" };
        let _ = writeln!(out, "\tExpansion ROM at {:#x}{state}{size}", rom.address);
    }
    for cap in &facts.capabilities {
        let line = format!(
            "\tCapabilities: [{:02x}] {} {}",
            cap.offset,
            cap.name,
            cap_line(&cap.detail)
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    for cap in &facts.extended_capabilities {
        let name = if cap.name == "Unknown" {
            format!("Extended Capability ID {:#x}", cap.id)
        } else {
            cap.name.to_owned()
        };
        let line = format!(
            "\tCapabilities: [{:03x} v{}] {name} {}",
            cap.offset,
            cap.version,
            ecap_line(&cap.detail)
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    let resets: Vec<&str> = resets.iter().map(|r| r.sysfs_name()).collect();
    let _ = writeln!(
        out,
        "\tReset methods: {}",
        if resets.is_empty() {
            "none".to_owned()
        } else {
            resets.join(" ")
        }
    );
    for w in &facts.warnings {
        let _ = writeln!(out, "\tWarning: {w:?}");
    }
}

/// Title line of a device: "0000:03:00.0 Class [0108]: Vendor Device [v:d] (rev 01)".
pub fn title(ids: &PciIds, bdf: Bdf, facts: &DeviceFacts) -> String {
    format!(
        "{bdf} {} [{:04x}]: {} (rev {:02x})",
        class_name(ids, facts),
        facts.class.as_u16(),
        id_line(ids, facts),
        facts.revision
    )
}

/// Full text of one inventory record.
pub fn record(out: &mut String, ids: &PciIds, d: &DeviceRecord) {
    let _ = writeln!(out, "{}", title(ids, d.bdf, &d.facts));
    let dash = || "-".to_owned();
    let _ = writeln!(
        out,
        "\tDriver: {}  Override: {}  IOMMU group: {}  NUMA node: {}",
        d.driver.clone().unwrap_or_else(dash),
        d.driver_override.clone().unwrap_or_else(dash),
        d.iommu_group.map_or_else(dash, |g| g.to_string()),
        d.numa_node.map_or_else(dash, |n| n.to_string())
    );
    if !d.parent_chain.is_empty() {
        let chain: Vec<String> = d.parent_chain.iter().map(ToString::to_string).collect();
        let _ = writeln!(out, "\tUpstream: {}", chain.join(" -> "));
    }
    for b in &d.block_devices {
        let _ = writeln!(
            out,
            "\tBlock device: {} mounted at: {}",
            b.name,
            b.mount_points.join(", ")
        );
    }
    if !d.net_interfaces.is_empty() {
        let _ = writeln!(out, "\tNetwork interfaces: {}", d.net_interfaces.join(", "));
    }
    if d.backs_root_fs {
        let _ = writeln!(out, "\tSAFETY: backs the root filesystem");
    }
    if d.backs_default_route {
        let _ = writeln!(out, "\tSAFETY: carries the default route");
    }
    if let Some(e) = &d.config_error {
        let _ = writeln!(out, "\tConfig space unavailable: {e}");
    }
    facts_body(out, ids, &d.facts, &d.reset_methods);
    for w in &d.sysfs_warnings {
        let _ = writeln!(out, "\tsysfs warning: {w}");
    }
}

/// The inventory table.
pub fn inventory_table(ids: &PciIds, inv: &HostInventory) -> String {
    let header = [
        "BDF", "CLASS", "DEVICE", "DRIVER", "IOMMU", "NUMA", "LINK", "BARS", "RESET", "FLAGS",
    ];
    let mut rows: Vec<[String; 10]> = Vec::new();
    for d in &inv.devices {
        let f = &d.facts;
        let link = match (f.pci_express(), &d.link.current_speed, d.link.current_width) {
            (_, Some(speed), Some(width)) => format!(
                "{} x{width}",
                speed.trim_end_matches(" PCIe").replace(' ', "")
            ),
            (Some(e), _, _) => format!("{} x{}", e.link.speed, e.link.width),
            _ => "-".to_owned(),
        };
        let bars: Vec<String> = f
            .bars
            .iter()
            .map(|b| {
                format!(
                    "{}:{}",
                    b.index,
                    b.size.map_or_else(|| "?".to_owned(), human_size)
                )
            })
            .collect();
        let resets: Vec<&str> = d.reset_methods.iter().map(|r| r.sysfs_name()).collect();
        let mut flags = Vec::new();
        if d.backs_root_fs {
            flags.push("ROOT-FS");
        }
        if d.backs_default_route {
            flags.push("DEFAULT-ROUTE");
        }
        if !d.block_devices.is_empty() && !d.backs_root_fs {
            flags.push("block");
        }
        if d.sriov.is_some() {
            flags.push("sr-iov");
        }
        if d.physfn.is_some() {
            flags.push("vf");
        }
        rows.push([
            d.bdf.to_string(),
            format!("{} [{:04x}]", class_name(ids, f), f.class.as_u16()),
            id_line(ids, f),
            d.driver.clone().unwrap_or_else(|| "-".to_owned()),
            d.iommu_group
                .map_or_else(|| "-".to_owned(), |g| g.to_string()),
            d.numa_node
                .map_or_else(|| "-".to_owned(), |n| n.to_string()),
            link,
            if bars.is_empty() {
                "-".to_owned()
            } else {
                bars.join(" ")
            },
            if resets.is_empty() {
                "-".to_owned()
            } else {
                resets.join(",")
            },
            if flags.is_empty() {
                "-".to_owned()
            } else {
                flags.join(",")
            },
        ]);
    }
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", padded.join("  ").trim_end());
    };
    line(&mut out, &header.map(str::to_owned));
    for row in &rows {
        line(&mut out, row);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units_and_refuse_overflow() {
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        let _too_large = parse_size("99999999T").expect_err("too large");
        let _unknown_unit = parse_size("12X").expect_err("unknown unit");
    }

    #[test]
    fn human_size_uses_largest_exact_unit() {
        assert_eq!(human_size(256 << 20), "256M");
    }

    #[test]
    fn human_size_keeps_odd_bytes() {
        assert_eq!(human_size(1536), "1536");
    }
}
