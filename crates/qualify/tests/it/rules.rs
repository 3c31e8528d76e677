use pcipool_pcie::{Bdf, ResetMethod, decode_with_sizes, presets};
use pcipool_qualify::{
    AccessModel, AdapterProfile, Code, DeviceContext, Input, IommuMode, NativeDriver, Neighbour,
    Override, PathHop, PlatformFacts, Severity, Verdict, qualify,
};

fn bdf(s: &str) -> Bdf {
    s.parse().expect("test address")
}

fn platform() -> PlatformFacts {
    PlatformFacts {
        kernel_release: Some("6.1.0".into()),
        iommu: IommuMode::Translated,
        iommu_evidence: "test".into(),
        driver_override: true,
        drivers_probe: true,
        sriov_support: true,
        host_bridge: Some((0x8086, 0x2020)),
        cpu: Some(("GenuineIntel".into(), 6)),
    }
}

/// A well-behaved NVMe: FLR, alone in its group and on its bus, native driver present.
fn nvme() -> DeviceContext {
    let built = presets::nvme_ssd().build();
    DeviceContext {
        bdf: bdf("03:00.0"),
        facts: decode_with_sizes(&built.bytes, &built.sizes).expect("preset decodes"),
        driver: None,
        iommu_group: Some(5),
        group_peers: vec![],
        reset_methods: vec![ResetMethod::Flr, ResetMethod::Bus],
        reset_methods_from_kernel: true,
        bus_siblings: vec![],
        upstream_path: vec![],
        ntb_path: vec![],
        mount_points: vec![],
        backs_root_fs: false,
        backs_default_route: false,
        is_fabric_path: false,
        is_virtual_function: false,
        native_driver: NativeDriver::Found("nvme".into()),
    }
}

fn profile() -> AdapterProfile {
    AdapterProfile::named("dolphin-pxh830-32g").expect("shipped profile")
}

fn run(
    device: &DeviceContext,
    platform: &PlatformFacts,
    model: AccessModel,
) -> pcipool_qualify::ModelResult {
    let profile = profile();
    let input = Input {
        device,
        platform,
        profile: &profile,
        dma_window: 1 << 30,
    };
    qualify(&input, model, &[])
}

fn severity_of(
    device: &DeviceContext,
    platform: &PlatformFacts,
    model: AccessModel,
    code: Code,
) -> Option<Severity> {
    run(device, platform, model)
        .findings
        .iter()
        .find(|f| f.code == code)
        .map(|f| f.severity)
}

fn busy(s: &str) -> Neighbour {
    Neighbour {
        bdf: bdf(s),
        driver: Some("nvme".into()),
        is_bridge: false,
        in_use: true,
    }
}

#[test]
fn clean_nvme_passes_lend() {
    assert_eq!(
        run(&nvme(), &platform(), AccessModel::Lend).verdict,
        Verdict::Pass
    );
}

#[test]
fn root_fs_fails_every_model() {
    let mut d = nvme();
    d.backs_root_fs = true;
    d.mount_points = vec!["/".into()];
    let verdicts: Vec<Verdict> = AccessModel::ALL
        .iter()
        .map(|m| run(&d, &platform(), *m).verdict)
        .collect();
    assert_eq!(
        (
            verdicts,
            severity_of(&d, &platform(), AccessModel::Lend, Code::BacksRootFs)
        ),
        (vec![Verdict::Fail; 3], Some(Severity::Fail))
    );
}

#[test]
fn root_fs_override_is_refused() {
    let mut d = nvme();
    d.backs_root_fs = true;
    let profile = profile();
    let platform = platform();
    let input = Input {
        device: &d,
        platform: &platform,
        profile: &profile,
        dma_window: 0,
    };
    let ov = Override {
        code: Code::BacksRootFs,
        bdf: None,
        model: None,
        reason: "I know".into(),
    };
    assert_eq!(
        qualify(&input, AccessModel::Lend, &[ov]).verdict,
        Verdict::Fail
    );
}

#[test]
fn other_mount_fails() {
    let mut d = nvme();
    d.mount_points = vec!["/data".into()];
    assert_eq!(
        severity_of(&d, &platform(), AccessModel::Lend, Code::BacksMountedFs),
        Some(Severity::Fail)
    );
}

#[test]
fn default_route_fails() {
    let mut d = nvme();
    d.backs_default_route = true;
    assert_eq!(
        severity_of(
            &d,
            &platform(),
            AccessModel::Shared,
            Code::BacksDefaultRoute
        ),
        Some(Severity::Fail)
    );
}

#[test]
fn fabric_path_fails() {
    let mut d = nvme();
    d.is_fabric_path = true;
    assert_eq!(
        severity_of(&d, &platform(), AccessModel::Lend, Code::FabricPathDevice),
        Some(Severity::Fail)
    );
}

#[test]
fn bridge_is_not_an_endpoint() {
    let mut d = nvme();
    d.facts = decode_with_sizes(
        &presets::switch_downstream_port().build().bytes,
        &Default::default(),
    )
    .expect("decodes");
    assert_eq!(
        severity_of(&d, &platform(), AccessModel::Lend, Code::NotAnEndpoint),
        Some(Severity::Fail)
    );
}

#[test]
fn host_bridge_is_not_an_endpoint() {
    let mut d = nvme();
    let built = pcipool_pcie::ConfigBuilder::endpoint(0x8086, 0x2020, 0x06_00_00).build();
    d.facts = decode_with_sizes(&built.bytes, &built.sizes).expect("decodes");
    assert_eq!(
        severity_of(&d, &platform(), AccessModel::Lend, Code::NotAnEndpoint),
        Some(Severity::Fail)
    );
}

#[test]
fn no_reset_fails_lend_but_warns_shared() {
    let mut d = nvme();
    d.reset_methods = vec![];
    let p = platform();
    assert_eq!(
        (
            severity_of(&d, &p, AccessModel::Lend, Code::ResetNone),
            severity_of(&d, &p, AccessModel::Shared, Code::ResetNone)
        ),
        (Some(Severity::Fail), Some(Severity::Warn))
    );
}

#[test]
fn bus_only_reset_warns() {
    let mut d = nvme();
    d.reset_methods = vec![ResetMethod::Bus];
    assert_eq!(
        severity_of(&d, &platform(), AccessModel::Lend, Code::ResetBusOnly),
        Some(Severity::Warn)
    );
}

#[test]
fn no_function_reset_under_bridge_with_busy_sibling_fails() {
    // The kernel drops "bus" from the list because of the sibling: nothing can reset the device alone.
    let mut d = nvme();
    d.reset_methods = vec![];
    d.upstream_path = vec![PathHop {
        bdf: bdf("00:01.0"),
        acs_request_redirect: None,
        switch_port: false,
    }];
    d.bus_siblings = vec![busy("03:00.1")];
    assert_eq!(
        severity_of(
            &d,
            &platform(),
            AccessModel::Lend,
            Code::BusResetSiblingsBusy
        ),
        Some(Severity::Fail)
    );
}

#[test]
fn root_bus_device_without_reset_has_no_sibling_finding() {
    let mut d = nvme();
    d.reset_methods = vec![];
    d.bus_siblings = vec![busy("03:00.1")];
    assert_eq!(
        severity_of(
            &d,
            &platform(),
            AccessModel::Lend,
            Code::BusResetSiblingsBusy
        ),
        None
    );
}

#[test]
fn flr_with_busy_sibling_only_warns() {
    let mut d = nvme();
    d.bus_siblings = vec![busy("03:00.1")];
    assert_eq!(
        severity_of(
            &d,
            &platform(),
            AccessModel::Lend,
            Code::BusResetSiblingsBusy
        ),
        Some(Severity::Warn)
    );
}

#[test]
fn derived_reset_methods_are_noted() {
    let mut d = nvme();
    d.reset_methods_from_kernel = false;
    assert_eq!(
        severity_of(
            &d,
            &platform(),
            AccessModel::Lend,
            Code::ResetMethodsDerived
        ),
        Some(Severity::Info)
    );
}

#[test]
fn iommu_off_warns() {
    let mut p = platform();
    p.iommu = IommuMode::Off;
    assert_eq!(
        severity_of(&nvme(), &p, AccessModel::Lend, Code::IommuOff),
        Some(Severity::Warn)
    );
}

#[test]
fn iommu_passthrough_warns() {
    let mut p = platform();
    p.iommu = IommuMode::Passthrough;
    assert_eq!(
        severity_of(&nvme(), &p, AccessModel::Lend, Code::IommuPassthrough),
        Some(Severity::Warn)
    );
}

#[test]
fn shared_iommu_group_fails_lend() {
    let mut d = nvme();
    d.group_peers = vec![busy("03:00.1")];
    assert_eq!(
        severity_of(&d, &platform(), AccessModel::Lend, Code::IommuGroupShared),
        Some(Severity::Fail)
    );
}

#[test]
fn bridge_in_group_is_harmless() {
    let mut d = nvme();
    d.group_peers = vec![Neighbour {
        bdf: bdf("00:01.0"),
        driver: Some("pcieport".into()),
        is_bridge: true,
        in_use: true,
    }];
    assert_eq!(
        severity_of(&d, &platform(), AccessModel::Lend, Code::IommuGroupShared),
        None
    );
}

#[test]
fn missing_native_driver_fails_lend_not_shared() {
    let mut d = nvme();
    d.native_driver = NativeDriver::NotFound;
    let p = platform();
    assert_eq!(
        (
            severity_of(&d, &p, AccessModel::Lend, Code::NoNativeDriver),
            severity_of(&d, &p, AccessModel::Shared, Code::NoNativeDriver)
        ),
        (Some(Severity::Fail), None)
    );
}

#[test]
fn unknown_native_driver_warns() {
    let mut d = nvme();
    d.native_driver = NativeDriver::Unknown;
    assert_eq!(
        severity_of(
            &d,
            &platform(),
            AccessModel::Lend,
            Code::NativeDriverUnknown
        ),
        Some(Severity::Warn)
    );
}

#[test]
fn no_driver_override_warns() {
    let mut p = platform();
    p.driver_override = false;
    assert_eq!(
        severity_of(
            &nvme(),
            &p,
            AccessModel::Lend,
            Code::DriverOverrideUnsupported
        ),
        Some(Severity::Warn)
    );
}

#[test]
fn bound_local_driver_is_info() {
    let mut d = nvme();
    d.driver = Some("nvme".into());
    assert_eq!(
        severity_of(&d, &platform(), AccessModel::Lend, Code::LocalDriverBound),
        Some(Severity::Info)
    );
}

#[test]
fn intx_only_device_fails_lend() {
    let mut d = nvme();
    let built = pcipool_pcie::ConfigBuilder::endpoint(0x1234, 0x0001, 0x0c_03_00)
        .bar32(0, 0xfe00_0000, 0x1000, false)
        .interrupt_pin(1)
        .pm(false)
        .build();
    d.facts = decode_with_sizes(&built.bytes, &built.sizes).expect("decodes");
    assert_eq!(
        severity_of(&d, &platform(), AccessModel::Lend, Code::IntxOnly),
        Some(Severity::Fail)
    );
}

#[test]
fn vf_model_without_sriov_fails() {
    assert_eq!(
        severity_of(&nvme(), &platform(), AccessModel::Vf, Code::SriovAbsent),
        Some(Severity::Fail)
    );
}

#[test]
fn vf_model_on_kernel_without_iov_fails() {
    let mut d = nvme();
    let built = presets::sriov_nic().build();
    d.facts = decode_with_sizes(&built.bytes, &built.sizes).expect("decodes");
    let mut p = platform();
    p.sriov_support = false;
    assert_eq!(
        severity_of(&d, &p, AccessModel::Vf, Code::SriovUnsupportedKernel),
        Some(Severity::Fail)
    );
}

fn behind_switch(redirect: bool) -> DeviceContext {
    let mut d = nvme();
    d.upstream_path = vec![
        PathHop {
            bdf: bdf("02:00.0"),
            acs_request_redirect: Some(redirect),
            switch_port: true,
        },
        PathHop {
            bdf: bdf("01:00.0"),
            acs_request_redirect: None,
            switch_port: true,
        },
        PathHop {
            bdf: bdf("00:01.0"),
            acs_request_redirect: Some(true),
            switch_port: false,
        },
    ];
    d.ntb_path = vec![bdf("02:01.0"), bdf("01:00.0"), bdf("00:01.0")];
    d
}

#[test]
fn p2p_via_common_switch_is_info() {
    assert_eq!(
        severity_of(
            &behind_switch(false),
            &platform(),
            AccessModel::Lend,
            Code::P2pViaSwitch
        ),
        Some(Severity::Info)
    );
}

#[test]
fn acs_redirect_below_switch_warns() {
    assert_eq!(
        severity_of(
            &behind_switch(true),
            &platform(),
            AccessModel::Lend,
            Code::AcsRedirectForcesRc
        ),
        Some(Severity::Warn)
    );
}

#[test]
fn p2p_through_untrusted_root_complex_warns() {
    let mut d = nvme();
    d.upstream_path = vec![PathHop {
        bdf: bdf("00:01.0"),
        acs_request_redirect: None,
        switch_port: false,
    }];
    d.ntb_path = vec![bdf("00:02.0")];
    let mut p = platform();
    p.host_bridge = Some((0x1022, 0x1480));
    assert_eq!(
        severity_of(&d, &p, AccessModel::Lend, Code::P2pThroughUntrustedRc),
        Some(Severity::Warn)
    );
}

#[test]
fn p2p_through_amd_zen_root_complex_is_trusted() {
    let mut d = nvme();
    d.ntb_path = vec![bdf("00:02.0")];
    let mut p = platform();
    p.host_bridge = Some((0x1022, 0x1480));
    p.cpu = Some(("AuthenticAMD".into(), 0x19));
    assert_eq!(
        severity_of(&d, &p, AccessModel::Lend, Code::P2pThroughTrustedRc),
        Some(Severity::Info)
    );
}

#[test]
fn p2p_through_trusted_root_complex_is_info() {
    let mut d = nvme();
    d.ntb_path = vec![bdf("00:02.0")];
    assert_eq!(
        severity_of(
            &d,
            &platform(),
            AccessModel::Lend,
            Code::P2pThroughTrustedRc
        ),
        Some(Severity::Info)
    );
}

#[test]
fn large_gpu_bar_exceeds_default_window() {
    let mut d = nvme();
    // A 32 GiB BAR with no resizable-BAR capability to shrink it.
    let built = pcipool_pcie::ConfigBuilder::endpoint(0x10de, 0x2330, 0x03_02_00)
        .bar32(0, 0xfa00_0000, 16 << 20, false)
        .bar64(1, 0x40_0000_0000, 32 << 30, true)
        .msi(0)
        .build();
    d.facts = decode_with_sizes(&built.bytes, &built.sizes).expect("decodes");
    let p = platform();
    let default = AdapterProfile::named("dolphin-pxh830").expect("shipped");
    let input = Input {
        device: &d,
        platform: &p,
        profile: &default,
        dma_window: 0,
    };
    let result = qualify(&input, AccessModel::Lend, &[]);
    let finding = result
        .findings
        .iter()
        .find(|f| f.code == Code::BarExceedsWindow)
        .expect("finding");
    assert_eq!(
        (
            finding.severity,
            finding.evidence.get("largest_unfit").map(String::as_str)
        ),
        (Severity::Fail, Some("BAR 1=32 GiB"))
    );
}

#[test]
fn rebar_gpu_fits_default_window_when_shrunk() {
    // BAR 1 is 256 MiB and resizable; with BAR 0 (16 MiB) and BAR 3 (32 MiB) it needs 512 MiB.
    let mut d = nvme();
    let built = presets::gpu().build();
    d.facts = decode_with_sizes(&built.bytes, &built.sizes).expect("decodes");
    let p = platform();
    let default = AdapterProfile::named("dolphin-pxh830").expect("shipped");
    let input = Input {
        device: &d,
        platform: &p,
        profile: &default,
        dma_window: 0,
    };
    let result = qualify(&input, AccessModel::Lend, &[]);
    let finding = result
        .findings
        .iter()
        .find(|f| f.code == Code::BarExceedsWindow)
        .expect("finding");
    assert_eq!(
        finding.evidence.get("needed_window").map(String::as_str),
        Some("512 MiB")
    );
}

#[test]
fn dma_window_larger_than_adapter_fails() {
    let d = nvme();
    let p = platform();
    let default = AdapterProfile::named("dolphin-pxh830").expect("shipped");
    let input = Input {
        device: &d,
        platform: &p,
        profile: &default,
        dma_window: 4 << 30,
    };
    let result = qualify(&input, AccessModel::Lend, &[]);
    assert!(
        result
            .findings
            .iter()
            .any(|f| f.code == Code::DmaWindowExceeds && f.severity == Severity::Fail)
    );
}

#[test]
fn override_with_reason_turns_fail_into_pass() {
    let mut d = nvme();
    d.group_peers = vec![busy("03:00.1")];
    let p = platform();
    let profile = profile();
    let input = Input {
        device: &d,
        platform: &p,
        profile: &profile,
        dma_window: 0,
    };
    let ov = Override {
        code: Code::IommuGroupShared,
        bdf: Some(bdf("03:00.0")),
        model: None,
        reason: "peer 03:00.1 is lent with it".into(),
    };
    assert_eq!(
        qualify(&input, AccessModel::Lend, &[ov]).verdict,
        Verdict::Pass
    );
}
