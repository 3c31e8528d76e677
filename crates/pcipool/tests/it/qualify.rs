//! `pcipool qualify` on the fixture suite of fake sysfs trees, and on this machine's real sysfs.

use std::path::Path;

use pcipool_pcie::{Bdf, ConfigBuilder, LinkSpeed, PcieOptions, presets};
use pcipool_testkit::sysfs::{FakeDevice, SysfsTreeBuilder};

use crate::support::pcipool;

fn bdf(s: &str) -> Bdf {
    s.parse().expect("test address")
}

const MODULES_ALIAS: &str = "\
alias pci:v*d*sv*sd*bc01sc08i02* nvme
alias pci:v000015B3d00001017sv*sd*bc*sc*i* mlx5_core
alias pci:v000015B3d00001018sv*sd*bc*sc*i* mlx5_core
alias pci:v000010DEd*sv*sd*bc03sc*i* nouveau
alias pci:v00001B36d*sv*sd*bc*sc*i* fake_xhci
";

/// The lab: root port 00:01.0 -> switch (01:00.0 up, 02:00.0 / 02:01.0 down); NVMe 03:00.0 (FLR, own
/// group) and the NTB adapter 04:00.0 below that switch; GPU with a 32 GiB BAR 05:00.0 behind root port
/// 00:02.0; SR-IOV NIC 06:00.0 with 8 VFs; FPGA 07:00.0 without FLR sharing bus 07 (and its IOMMU group)
/// with a busy USB controller 07:00.1.
/// The switch downstream port preset with ACS P2P request/completion redirect cleared (an operator who
/// booted with `pci=disable_acs_redir=`), so P2P between its devices stays in the switch.
fn downstream_port_without_redirect() -> pcipool_pcie::BuiltConfig {
    let mut built = presets::switch_downstream_port().build();
    let facts = pcipool_pcie::decode(&built.bytes).expect("preset decodes");
    let acs = facts
        .ext_capability(pcipool_pcie::regs::ECAP_ID_ACS)
        .expect("ACS")
        .offset;
    let ctrl = usize::from(acs) + pcipool_pcie::regs::ACS_CTRL;
    built.bytes[ctrl] &= !0x0c;
    built
}

fn lab(dir: &Path, translated: bool) -> String {
    let fpga_built = presets::fpga().build();
    let usb = ConfigBuilder::endpoint(0x1b36, 0x000d, 0x0c_03_30)
        .bar64(0, 0xfd00_0000, 0x4000, false)
        .msix(8, 0, 0x1000, 0x1800)
        .pcie(PcieOptions::endpoint(LinkSpeed::Gt5, 1))
        .build();
    let gpu32 = ConfigBuilder::endpoint(0x10de, 0x2330, 0x03_02_00)
        .bar32(0, 0xfa00_0000, 16 << 20, false)
        .bar64(1, 0x40_0000_0000, 32 << 30, true)
        .msi(0)
        .pcie(PcieOptions::endpoint(LinkSpeed::Gt16, 16))
        .build();
    let vf = ConfigBuilder::endpoint(0x15b3, 0x1018, 0x02_00_00)
        .bar64(0, 0x3a_1000_0000, 1 << 20, true)
        .msix(8, 0, 0x2000, 0x3000)
        .pcie(PcieOptions::endpoint(LinkSpeed::Gt8, 16))
        .build();
    let group = |g: u32| if translated { Some(g) } else { None };
    let mut b = SysfsTreeBuilder::new(dir).kernel_release("6.1.0-18-amd64");
    let mut add = |d: FakeDevice, g: u32| {
        let mut d = d;
        d.iommu_group = group(g);
        b = std::mem::replace(&mut b, SysfsTreeBuilder::new(dir)).device(d);
    };
    add(
        FakeDevice::new(bdf("00:01.0"), presets::root_port().build()).driver("pcieport"),
        1,
    );
    add(
        FakeDevice::new(bdf("00:02.0"), presets::root_port().build()).driver("pcieport"),
        2,
    );
    add(
        FakeDevice::new(bdf("00:03.0"), presets::root_port().build()).driver("pcieport"),
        3,
    );
    add(
        FakeDevice::new(bdf("00:04.0"), presets::root_port().build()).driver("pcieport"),
        4,
    );
    add(
        FakeDevice::new(bdf("01:00.0"), presets::switch_upstream_port().build())
            .under(bdf("00:01.0"))
            .driver("pcieport"),
        10,
    );
    add(
        FakeDevice::new(bdf("02:00.0"), downstream_port_without_redirect())
            .under(bdf("01:00.0"))
            .driver("pcieport"),
        11,
    );
    add(
        FakeDevice::new(bdf("02:01.0"), downstream_port_without_redirect())
            .under(bdf("01:00.0"))
            .driver("pcieport"),
        12,
    );
    add(
        FakeDevice::new(bdf("03:00.0"), presets::nvme_ssd().build())
            .under(bdf("02:00.0"))
            .driver("nvme")
            .reset_method("flr bus"),
        20,
    );
    add(
        FakeDevice::new(bdf("04:00.0"), presets::ntb_adapter().build())
            .under(bdf("02:01.0"))
            .driver("ntb_hw_plx"),
        21,
    );
    add(
        FakeDevice::new(bdf("05:00.0"), gpu32)
            .under(bdf("00:02.0"))
            .reset_method("bus"),
        22,
    );
    let mut nic = FakeDevice::new(bdf("06:00.0"), presets::sriov_nic().build())
        .under(bdf("00:03.0"))
        .driver("mlx5_core")
        .reset_method("flr");
    nic.sriov = Some((16, 8));
    add(nic, 23);
    for i in 0..8u8 {
        let mut v = FakeDevice::new(
            Bdf::new(0, 6, i / 8, i % 8 + if i < 6 { 2 } else { 0 }).expect("vf addr"),
            vf.clone(),
        );
        v = v.under(bdf("00:03.0")).reset_method("flr");
        v.physfn = Some(bdf("06:00.0"));
        if i >= 6 {
            v.bdf = Bdf::new(0, 6, 1, i - 6).expect("vf addr");
        }
        add(v, 30 + u32::from(i));
    }
    add(
        FakeDevice::new(bdf("07:00.0"), fpga_built).under(bdf("00:04.0")),
        40,
    );
    add(
        FakeDevice::new(bdf("07:00.1"), usb)
            .under(bdf("00:04.0"))
            .driver("xhci_hcd")
            .reset_method("flr"),
        40,
    );
    let host = b.build().expect("fake tree");
    std::fs::write(dir.join("modules.alias"), MODULES_ALIAS).expect("write aliases");
    host.sys.to_string_lossy().into_owned()
}

fn qualify_json(dir: &Path, sys: &str, extra: &[&str]) -> (Option<i32>, serde_json::Value) {
    let aliases = dir.join("modules.alias");
    let mut args = vec![
        "qualify",
        "--sysfs-root",
        sys,
        "--output",
        "json",
        "--borrower-modules",
    ];
    let aliases = aliases.to_string_lossy().into_owned();
    args.push(&aliases);
    args.extend_from_slice(extra);
    let out = pcipool(&args);
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code(), json)
}

/// (verdict, non-info codes) of one device and model.
fn result(json: &serde_json::Value, dev: &str, model: &str) -> (String, Vec<String>) {
    let device = json["devices"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["bdf"] == dev))
        .unwrap_or(&serde_json::Value::Null);
    let m = device["models"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["model"] == model))
        .unwrap_or(&serde_json::Value::Null);
    let codes = m["findings"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .filter(|f| f["severity"] != "info")
                .filter_map(|f| f["code"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    (m["verdict"].as_str().unwrap_or("?").to_owned(), codes)
}

fn codes(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn nvme_with_flr_alone_in_group_passes_lend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sys = lab(dir.path(), true);
    let (_, json) = qualify_json(dir.path(), &sys, &[]);
    assert_eq!(
        result(&json, "0000:03:00.0", "lend"),
        ("pass".to_owned(), vec![])
    );
}

#[test]
fn nvme_p2p_goes_through_shared_switch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sys = lab(dir.path(), true);
    let (_, json) = qualify_json(dir.path(), &sys, &[]);
    let findings = json["devices"][7]["models"][0]["findings"].to_string();
    assert_eq!(
        (
            json["ntb_adapter"].as_str(),
            findings.contains("P2P_VIA_SWITCH")
        ),
        (Some("0000:04:00.0"), true)
    );
}

#[test]
fn gpu_with_32g_bar_exceeds_default_dolphin_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sys = lab(dir.path(), true);
    let (code, json) = qualify_json(
        dir.path(),
        &sys,
        &[
            "05:00.0",
            "--model",
            "lend",
            "--adapter-profile",
            "dolphin-pxh830",
        ],
    );
    assert_eq!(
        (code, result(&json, "0000:05:00.0", "lend")),
        (
            Some(2),
            (
                "fail".to_owned(),
                codes(&[
                    "BAR_EXCEEDS_WINDOW",
                    "RESET_BUS_ONLY",
                    "P2P_THROUGH_UNTRUSTED_RC"
                ])
            )
        )
    );
}

#[test]
fn sriov_nic_with_8_vfs_qualifies_for_vf_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sys = lab(dir.path(), true);
    let (_, json) = qualify_json(dir.path(), &sys, &[]);
    let nic = json["devices"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["bdf"] == "0000:06:00.0"))
        .cloned();
    assert_eq!(
        (result(&json, "0000:06:00.0", "vf"), nic.is_some()),
        (
            ("warn".to_owned(), codes(&["P2P_THROUGH_UNTRUSTED_RC"])),
            true
        )
    );
}

#[test]
fn fpga_needing_bus_reset_with_busy_sibling_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sys = lab(dir.path(), true);
    let (_, json) = qualify_json(dir.path(), &sys, &["07:00.0"]);
    let (verdict, found) = result(&json, "0000:07:00.0", "lend");
    assert_eq!(
        (
            verdict,
            found.contains(&"BUS_RESET_SIBLINGS_BUSY".to_owned()),
            found.contains(&"RESET_NONE".to_owned())
        ),
        ("fail".to_owned(), true, true)
    );
}

#[test]
fn device_sharing_iommu_group_fails_lend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sys = lab(dir.path(), true);
    let (_, json) = qualify_json(dir.path(), &sys, &["07:00.1"]);
    let (verdict, found) = result(&json, "0000:07:00.1", "lend");
    assert_eq!(
        (verdict, found.contains(&"IOMMU_GROUP_SHARED".to_owned())),
        ("fail".to_owned(), true)
    );
}

#[test]
fn iommu_off_platform_warns_everywhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sys = lab(dir.path(), false);
    let (_, json) = qualify_json(dir.path(), &sys, &["03:00.0", "--model", "lend"]);
    assert_eq!(
        (
            json["platform"]["iommu"].as_str(),
            result(&json, "0000:03:00.0", "lend")
        ),
        (Some("off"), ("warn".to_owned(), codes(&["IOMMU_OFF"])))
    );
}

#[test]
fn acs_redirect_below_shared_switch_warns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut b = SysfsTreeBuilder::new(dir.path()).kernel_release("6.1.0");
    for (addr, parent, built, drv) in [
        (
            "00:01.0",
            None,
            presets::root_port().build(),
            Some("pcieport"),
        ),
        (
            "01:00.0",
            Some("00:01.0"),
            presets::switch_upstream_port().build(),
            Some("pcieport"),
        ),
        (
            "02:00.0",
            Some("01:00.0"),
            presets::switch_downstream_port().build(),
            Some("pcieport"),
        ),
        (
            "02:01.0",
            Some("01:00.0"),
            presets::switch_downstream_port().build(),
            Some("pcieport"),
        ),
        (
            "03:00.0",
            Some("02:00.0"),
            presets::nvme_ssd().build(),
            None,
        ),
        (
            "04:00.0",
            Some("02:01.0"),
            presets::ntb_adapter().build(),
            Some("ntb_hw_plx"),
        ),
    ] {
        let mut d = FakeDevice::new(bdf(addr), built).reset_method("flr");
        d.parent = parent.map(bdf);
        d.driver = drv.map(str::to_owned);
        b = b.device(d);
    }
    let sys = b
        .build()
        .expect("fake tree")
        .sys
        .to_string_lossy()
        .into_owned();
    std::fs::write(dir.path().join("modules.alias"), MODULES_ALIAS).expect("write");
    let (_, json) = qualify_json(dir.path(), &sys, &["03:00.0", "--model", "lend"]);
    assert_eq!(
        result(&json, "0000:03:00.0", "lend").1,
        codes(&["IOMMU_OFF", "ACS_REDIRECT_FORCES_RC"])
    );
}

#[test]
fn ntb_adapter_and_its_switch_are_fabric_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sys = lab(dir.path(), true);
    let (_, json) = qualify_json(dir.path(), &sys, &["04:00.0", "01:00.0", "--model", "lend"]);
    let ntb = result(&json, "0000:04:00.0", "lend").1;
    let up = result(&json, "0000:01:00.0", "lend").1;
    assert_eq!(
        (
            ntb.contains(&"FABRIC_PATH_DEVICE".to_owned()),
            up.contains(&"FABRIC_PATH_DEVICE".to_owned())
        ),
        (true, true)
    );
}

#[test]
fn missing_borrower_driver_fails_lend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sys = lab(dir.path(), true);
    std::fs::write(
        dir.path().join("modules.alias"),
        "alias pci:v000015B3d*sv*sd*bc*sc*i* mlx5_core\n",
    )
    .expect("write");
    let (_, json) = qualify_json(dir.path(), &sys, &["03:00.0", "--model", "lend"]);
    assert_eq!(
        result(&json, "0000:03:00.0", "lend"),
        ("fail".to_owned(), codes(&["NO_NATIVE_DRIVER"]))
    );
}

#[test]
fn policy_override_needs_a_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sys = lab(dir.path(), true);
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[[override]]\ncode = \"IOMMU_GROUP_SHARED\"\nreason = \"\"\n",
    )
    .expect("write");
    let (code, _) = qualify_json(dir.path(), &sys, &["--policy", &policy.to_string_lossy()]);
    assert_eq!(code, Some(3));
}

#[test]
fn policy_override_with_reason_is_recorded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sys = lab(dir.path(), true);
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[[override]]\ncode = \"IOMMU_GROUP_SHARED\"\nbdf = \"0000:07:00.1\"\nreason = \"FPGA is never lent\"\n",
    )
    .expect("write");
    let (_, json) = qualify_json(
        dir.path(),
        &sys,
        &[
            "07:00.1",
            "--model",
            "lend",
            "--policy",
            &policy.to_string_lossy(),
        ],
    );
    let text = json["devices"][0]["models"][0]["findings"].to_string();
    assert_eq!(
        (
            result(&json, "0000:07:00.1", "lend"),
            text.contains("FPGA is never lent")
        ),
        (
            (
                "warn".to_owned(),
                codes(&["IOMMU_GROUP_SHARED", "P2P_THROUGH_UNTRUSTED_RC"])
            ),
            true
        )
    );
}

#[test]
fn strict_turns_warnings_into_exit_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sys = lab(dir.path(), false);
    let (relaxed, _) = qualify_json(dir.path(), &sys, &["03:00.0", "--model", "lend"]);
    let (strict, _) = qualify_json(
        dir.path(),
        &sys,
        &["03:00.0", "--model", "lend", "--strict"],
    );
    assert_eq!((relaxed, strict), (Some(0), Some(1)));
}

#[test]
fn unknown_profile_exits_4() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sys = lab(dir.path(), true);
    let (code, _) = qualify_json(dir.path(), &sys, &["--adapter-profile", "no-such-adapter"]);
    assert_eq!(code, Some(4));
}

#[test]
fn table_names_what_to_fix_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sys = lab(dir.path(), true);
    let out = pcipool(&[
        "qualify",
        "07:00.0",
        "--sysfs-root",
        &sys,
        "--model",
        "lend",
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let first = text.lines().nth(1).unwrap_or("");
    assert!(
        first.contains("FAIL") && first.contains("RESET_NONE"),
        "{text}"
    );
}

/// This machine: the virtio disk holds `/`, the virtio NIC the default route; IOMMU and reset findings
/// follow what the kernel exposes (iommu_groups, reset_method).
#[test]
fn this_machine_root_disk_and_default_route_fail() {
    if !Path::new("/sys/bus/pci/devices").is_dir() {
        let why = "no /sys/bus/pci on this machine";
        pcipool_testkit::skip::skipped("this_machine_root_disk_and_default_route_fail", why);
        return;
    }
    let out = pcipool(&["qualify", "--output", "json", "--model", "lend"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let devices = json["devices"].as_array().cloned().unwrap_or_default();
    let with = |code: &str| -> Vec<String> {
        devices
            .iter()
            .filter(|d| d["models"][0]["findings"].to_string().contains(code))
            .filter_map(|d| d["bdf"].as_str().map(str::to_owned))
            .collect()
    };
    let root_disk = crate::host::root_disk_bdf();
    let route_nic = crate::host::default_route_bdf();
    let groups = std::fs::read_dir("/sys/kernel/iommu_groups")
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(
        (
            root_disk
                .as_ref()
                .map(|b| with("BACKS_ROOT_FS") == vec![b.clone()]),
            route_nic
                .as_ref()
                .map(|b| with("BACKS_DEFAULT_ROUTE") == vec![b.clone()]),
            with("IOMMU_OFF").len() == devices.len(),
        ),
        (
            root_disk.map(|_| true),
            route_nic.map(|_| true),
            groups == 0
        )
    );
}

#[test]
fn this_machine_reset_findings_follow_kernel_reset_method() {
    if !Path::new("/sys/bus/pci/devices").is_dir() {
        let why = "no /sys/bus/pci on this machine";
        pcipool_testkit::skip::skipped(
            "this_machine_reset_findings_follow_kernel_reset_method",
            why,
        );
        return;
    }
    let out = pcipool(&["qualify", "--output", "json", "--model", "lend"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let mismatches: Vec<String> = json["devices"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|d| {
            let bdf = d["bdf"].as_str()?.to_owned();
            let kernel =
                std::fs::read_to_string(format!("/sys/bus/pci/devices/{bdf}/reset_method"))
                    .unwrap_or_default();
            let is_bridge = d["models"][0]["findings"]
                .to_string()
                .contains("NOT_AN_ENDPOINT")
                && d["class"]["sub"] == 4;
            let says_none = d["models"][0]["findings"]
                .to_string()
                .contains("RESET_NONE");
            (!is_bridge && kernel.trim().is_empty() != says_none).then_some(bdf)
        })
        .collect();
    assert_eq!(mismatches, Vec::<String>::new());
}

#[test]
fn operator_profile_file_is_used() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sys = lab(dir.path(), true);
    let profile = dir.path().join("lab-ntb.toml");
    std::fs::write(
        &profile,
        "name = \"lab-ntb\"\ndescription = \"64 GiB window\"\naperture = 68719476736\nsources = [\"our lab\"]\n",
    )
    .expect("write");
    let (_, json) = qualify_json(
        dir.path(),
        &sys,
        &[
            "05:00.0",
            "--model",
            "lend",
            "--adapter-profile",
            &profile.to_string_lossy(),
        ],
    );
    assert_eq!(
        (
            json["profile"]["name"].as_str(),
            result(&json, "0000:05:00.0", "lend")
                .1
                .contains(&"BAR_EXCEEDS_WINDOW".to_owned())
        ),
        (Some("lab-ntb"), false)
    );
}

#[test]
fn malformed_profile_file_exits_3() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sys = lab(dir.path(), true);
    let profile = dir.path().join("bad.toml");
    std::fs::write(&profile, "name = 5\n").expect("write");
    let (code, _) = qualify_json(
        dir.path(),
        &sys,
        &["--adapter-profile", &profile.to_string_lossy()],
    );
    assert_eq!(code, Some(3));
}

#[test]
fn markdown_report_has_summary_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sys = lab(dir.path(), true);
    let out = pcipool(&[
        "qualify",
        "03:00.0",
        "--sysfs-root",
        &sys,
        "--output",
        "markdown",
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("| BDF | device | lend | vf | shared | fix first |")
            && text.contains("| 0000:03:00.0 |"),
        "{text}"
    );
}
