use pcipool_pcie::caps::CapabilityDetail;
use pcipool_pcie::ecaps::ExtCapabilityDetail;
use pcipool_pcie::{
    BarKind, BusPosition, ConfigSpaceError, DecodeWarning, LinkSpeed, PortType, ResetMethod,
    decode, decode_with_sizes, derive_reset_methods, presets, regs,
};

#[test]
fn nvme_preset_decodes_ids_class_and_flr() {
    let facts = decode(&presets::nvme_ssd().build().bytes).expect("valid preset");
    let e = facts.pci_express().expect("PCIe capability");
    assert_eq!(
        (
            facts.vendor_id,
            facts.device_id,
            facts.class.as_u24(),
            e.flr_capable,
            e.link.width
        ),
        (0x144d, 0xa808, 0x01_08_02, true, 4)
    );
}

#[test]
fn gpu_preset_has_large_prefetchable_bar_with_size() {
    let built = presets::gpu().build();
    let facts = decode_with_sizes(&built.bytes, &built.sizes).expect("valid preset");
    let bar1 = facts.bars.iter().find(|b| b.index == 1).expect("BAR 1");
    assert_eq!(
        (bar1.kind, bar1.prefetchable, bar1.size),
        (BarKind::Memory64, true, Some(256 << 20))
    );
}

#[test]
fn gpu_preset_rebar_lists_sizes_up_to_8g() {
    let facts = decode(&presets::gpu().build().bytes).expect("valid preset");
    let entry = &facts.resizable_bar().expect("rebar").entries[0];
    assert_eq!(
        (
            entry.bar,
            entry.current_size,
            entry.supported_sizes.last().copied()
        ),
        (1, 256 << 20, Some(8 << 30))
    );
}

#[test]
fn gpu_without_flr_and_nosoftrst_has_no_function_reset() {
    let facts = decode(&presets::gpu().build().bytes).expect("valid preset");
    assert_eq!(
        derive_reset_methods(&facts, None),
        Vec::<ResetMethod>::new()
    );
}

#[test]
fn gpu_alone_under_a_bridge_gets_bus_reset() {
    let facts = decode(&presets::gpu().build().bytes).expect("valid preset");
    let alone = BusPosition {
        on_root_bus: false,
        has_siblings: false,
    };
    assert_eq!(
        derive_reset_methods(&facts, Some(alone)),
        vec![ResetMethod::Bus]
    );
}

#[test]
fn nvme_reset_methods_in_kernel_order() {
    let facts = decode(&presets::nvme_ssd().build().bytes).expect("valid preset");
    let alone = BusPosition {
        on_root_bus: false,
        has_siblings: false,
    };
    assert_eq!(
        derive_reset_methods(&facts, Some(alone)),
        vec![ResetMethod::Flr, ResetMethod::Pm, ResetMethod::Bus]
    );
}

#[test]
fn bridge_never_gets_bus_reset_for_itself() {
    let facts = decode(&presets::switch_downstream_port().build().bytes).expect("valid preset");
    let alone = BusPosition {
        on_root_bus: false,
        has_siblings: false,
    };
    assert_eq!(
        derive_reset_methods(&facts, Some(alone)),
        vec![ResetMethod::Pm]
    );
}

#[test]
fn advanced_features_flr_is_af_flr() {
    let facts = decode(&presets::every_capability().build().bytes).expect("valid preset");
    assert!(derive_reset_methods(&facts, None).contains(&ResetMethod::AfFlr));
}

#[test]
fn sriov_nic_preset_reports_total_vfs_and_vf_bar() {
    let facts = decode(&presets::sriov_nic().build().bytes).expect("valid preset");
    let sriov = facts.sriov().expect("SR-IOV");
    assert_eq!(
        (
            sriov.total_vfs,
            sriov.vf_device_id,
            sriov.first_vf_offset,
            sriov.vf_bars.len()
        ),
        (16, 0x1018, 2, 1)
    );
}

#[test]
fn downstream_port_has_hotplug_slot_and_acs() {
    let facts = decode(&presets::switch_downstream_port().build().bytes).expect("valid preset");
    let e = facts.pci_express().expect("PCIe");
    let slot = e.slot.clone().expect("slot");
    let acs = facts.acs().expect("ACS");
    assert_eq!(
        (
            e.port_type,
            slot.hot_plug_capable,
            slot.hot_plug_surprise,
            acs.control.request_redirect
        ),
        (PortType::DownstreamPort, true, true, true)
    );
}

#[test]
fn downstream_port_bridge_windows_decode() {
    let facts = decode(&presets::switch_downstream_port().build().bytes).expect("valid preset");
    let bridge = facts.bridge.expect("type 1");
    let pref = bridge.prefetchable_window.expect("open window");
    assert_eq!(
        (bridge.secondary_bus, pref.base, pref.limit),
        (3, 0x38_0000_0000, 0x38_3fff_ffff)
    );
}

#[test]
fn ntb_preset_window_bar_is_256m() {
    let built = presets::ntb_adapter().build();
    let facts = decode_with_sizes(&built.bytes, &built.sizes).expect("valid preset");
    let window = facts
        .bars
        .iter()
        .find(|b| b.index == 2)
        .expect("window BAR");
    assert_eq!(window.size, Some(256 << 20));
}

#[test]
fn every_capability_preset_decodes_each_listed_capability() {
    let facts = decode(&presets::every_capability().build().bytes).expect("valid preset");
    let std_ids: Vec<u8> = facts.capabilities.iter().map(|c| c.id).collect();
    let ext_ids: Vec<u16> = facts.extended_capabilities.iter().map(|c| c.id).collect();
    assert_eq!(
        (std_ids, ext_ids, facts.warnings.clone()),
        (
            vec![
                regs::CAP_ID_PM,
                regs::CAP_ID_MSI,
                regs::CAP_ID_MSIX,
                regs::CAP_ID_EXP,
                regs::CAP_ID_VNDR,
                regs::CAP_ID_SSVID,
                regs::CAP_ID_EA,
                regs::CAP_ID_AF
            ],
            vec![
                regs::ECAP_ID_AER,
                regs::ECAP_ID_VC,
                regs::ECAP_ID_DSN,
                regs::ECAP_ID_PWR,
                regs::ECAP_ID_ACS,
                regs::ECAP_ID_ARI,
                regs::ECAP_ID_ATS,
                regs::ECAP_ID_SRIOV,
                regs::ECAP_ID_REBAR,
                regs::ECAP_ID_DPC,
                regs::ECAP_ID_LTR,
                regs::ECAP_ID_L1SS,
                regs::ECAP_ID_SECPCI,
                regs::ECAP_ID_PASID,
                regs::ECAP_ID_PRI,
                regs::ECAP_ID_PTM,
                regs::ECAP_ID_DVSEC,
                regs::ECAP_ID_DOE,
                regs::ECAP_ID_PL_16GT,
                regs::ECAP_ID_PL_32GT,
                regs::ECAP_ID_VNDR
            ],
            Vec::new()
        )
    );
}

#[test]
fn every_capability_details_are_typed_not_other() {
    let facts = decode(&presets::every_capability().build().bytes).expect("valid preset");
    let std_other = facts
        .capabilities
        .iter()
        .filter(|c| {
            matches!(
                c.detail,
                CapabilityDetail::Other | CapabilityDetail::Truncated
            )
        })
        .count();
    let ext_other: Vec<u16> = facts
        .extended_capabilities
        .iter()
        .filter(|c| {
            matches!(
                c.detail,
                ExtCapabilityDetail::Other | ExtCapabilityDetail::Truncated
            )
        })
        .map(|c| c.id)
        .collect();
    // Power budgeting has no registers worth typing.
    assert_eq!((std_other, ext_other), (0, vec![regs::ECAP_ID_PWR]));
}

#[test]
fn trained_link_below_capability_is_visible() {
    let facts = decode(&presets::every_capability().build().bytes).expect("valid preset");
    let link = facts.pci_express().expect("PCIe").link.clone();
    assert_eq!(
        (link.max_speed, link.max_width, link.speed, link.width),
        (LinkSpeed::Gt32, 16, LinkSpeed::Gt16, 8)
    );
}

#[test]
fn all_ones_is_device_absent() {
    assert_eq!(
        decode(&[0xff; 256]).map(|f| f.vendor_id),
        Err(ConfigSpaceError::DeviceAbsent)
    );
}

#[test]
fn header_only_capture_warns_partial() {
    let bytes = presets::nvme_ssd().build().bytes;
    let facts = decode(&bytes[..64]).expect("header decodes");
    assert!(
        facts
            .warnings
            .contains(&DecodeWarning::PartialConfigSpace { len: 64 })
    );
}

#[test]
fn conventional_capture_of_pcie_device_warns_partial() {
    let bytes = presets::nvme_ssd().build().bytes;
    let facts = decode(&bytes[..256]).expect("decodes");
    assert_eq!(
        (facts.extended_capabilities.len(), facts.warnings.clone()),
        (0, vec![DecodeWarning::PartialConfigSpace { len: 256 }])
    );
}

#[test]
fn extended_space_ignored_on_conventional_pci_device() {
    // A conventional device whose bytes above 0x100 alias the header (the pciutils broken-ecaps case).
    let mut bytes = presets::nvme_ssd().build().bytes;
    bytes[0x40 + 0x01] = 0; // end the list after PM, dropping the PCIe capability
    let (head, tail) = bytes.split_at_mut(256);
    tail[..256].copy_from_slice(head);
    let facts = decode(&bytes).expect("decodes");
    assert_eq!(facts.extended_capabilities.len(), 0);
}
