//! Realistic config spaces of the device kinds a pool holds, for tests and for the simulator.
//!
//! Ids and layouts follow real parts named in the SmartIO evaluations (`docs/background.md`):
//! a Samsung NVMe SSD, an NVIDIA Quadro P4000 (no FLR, large prefetchable BAR), a Mellanox ConnectX-5
//! (SR-IOV), a Xilinx FPGA card, Broadcom PEX8733 switch ports and NT function (the chip on Dolphin's
//! PXH830 NTB adapter, whose prefetchable window defaults to 256 MiB).

use crate::builder::{ConfigBuilder, PcieOptions, SriovOptions};
use crate::caps::{LinkSpeed, PortType};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// NVMe SSD, Gen3 x4, FLR capable, 16 KiB BAR0, MSI-X with 33 vectors.
pub fn nvme_ssd() -> ConfigBuilder {
    ConfigBuilder::endpoint(0x144d, 0xa808, 0x01_08_02)
        .subsystem(0x144d, 0xa801)
        .bar64(0, 0xfb00_0000, 0x4000, false)
        .interrupt_pin(1)
        .pm(false)
        .msi(5)
        .pcie(PcieOptions::endpoint(LinkSpeed::Gt8, 4))
        .msix(33, 0, 0x3000, 0x2000)
        .aer()
        .serial_number(0x0025_3859_91b0_5401)
        .power_budgeting()
        .secondary_pcie(4)
        .ltr()
        .l1_substates()
}

/// GPU: 16 MiB registers, 256 MiB prefetchable 64-bit BAR resizable up to 8 GiB, no FLR (so a lender
/// must fall back to a bus reset), I/O BAR and expansion ROM.
pub fn gpu() -> ConfigBuilder {
    let sizes: Vec<u64> = (0..6).map(|n| (256 * MIB) << n).collect();
    let mut pcie = PcieOptions::endpoint(LinkSpeed::Gt8, 16);
    pcie.flr = false;
    pcie.port_type = PortType::LegacyEndpoint;
    ConfigBuilder::endpoint(0x10de, 0x1bb1, 0x03_00_00)
        .subsystem(0x10de, 0x11a3)
        .multifunction()
        .bar32(0, 0xf600_0000, 16 * MIB, false)
        .bar64(1, 0x38_0000_0000, 256 * MIB, true)
        .bar64(3, 0x38_1000_0000, 32 * MIB, true)
        .io_bar(5, 0xe000, 128)
        .rom(0xf700_0000, 512 * 1024, false)
        .interrupt_pin(1)
        .pm(true)
        .msi(0)
        .pcie(pcie)
        .virtual_channel()
        .resizable_bar(&[(1, 256 * MIB, &sizes)])
        .l1_substates()
        .secondary_pcie(16)
}

/// SR-IOV Ethernet NIC (16 VFs, ARI, ATS), Gen3 x16.
pub fn sriov_nic() -> ConfigBuilder {
    ConfigBuilder::endpoint(0x15b3, 0x1017, 0x02_00_00)
        .subsystem(0x15b3, 0x0007)
        .bar64(0, 0x3a_0000_0000, 32 * MIB, true)
        .rom(0xfa00_0000, 1024 * 1024, false)
        .interrupt_pin(1)
        .pcie(PcieOptions::endpoint(LinkSpeed::Gt8, 16))
        .msix(64, 0, 0x2000, 0x3000)
        .vendor_specific(0x18)
        .pm(false)
        .aer()
        .serial_number(0xb859_9f03_00e1_2a40)
        .ari(1)
        .sriov(&SriovOptions {
            total_vfs: 16,
            num_vfs: 0,
            first_vf_offset: 2,
            vf_stride: 1,
            vf_device_id: 0x1018,
            vf_bars: vec![(0, true, true, MIB)],
        })
        .ats()
        .secondary_pcie(16)
}

/// FPGA accelerator card: two 64-bit BARs, MSI-X, no FLR, vendor-specific extended capability.
pub fn fpga() -> ConfigBuilder {
    let mut pcie = PcieOptions::endpoint(LinkSpeed::Gt8, 16);
    pcie.flr = false;
    ConfigBuilder::endpoint(0x10ee, 0x5004, 0x12_00_00)
        .subsystem(0x10ee, 0x000e)
        .bar64(0, 0x3b_0000_0000, 32 * MIB, true)
        .bar64(2, 0x3b_0200_0000, 128 * 1024, true)
        .interrupt_pin(1)
        .pm(false)
        .msix(32, 2, 0x8000, 0x8fe0)
        .pcie(pcie)
        .aer()
        .vsec(0x0001)
        .serial_number(0x0000_0000_0a35_1234)
}

/// PCIe switch downstream port with a hot-plug slot and full ACS, Gen3 x8.
pub fn switch_downstream_port() -> ConfigBuilder {
    let mut pcie = PcieOptions::endpoint(LinkSpeed::Gt8, 8);
    pcie.port_type = PortType::DownstreamPort;
    pcie.flr = false;
    pcie.slot = Some((true, true, 4));
    pcie.ari_forwarding = true;
    ConfigBuilder::bridge(0x10b5, 0x8733, 0x06_04_00)
        .revision(0xca)
        .bridge_windows(
            (2, 3, 3),
            (0xfb00_0000, 0xfb0f_ffff),
            (0x38_0000_0000, 0x38_3fff_ffff),
        )
        .pm(false)
        .msi(0)
        .pcie(pcie)
        .ssvid(0x10b5, 0x8733)
        .aer()
        .acs(0x007f, 0x001d)
        .virtual_channel()
}

/// PCIe switch upstream port.
pub fn switch_upstream_port() -> ConfigBuilder {
    let mut pcie = PcieOptions::endpoint(LinkSpeed::Gt8, 16);
    pcie.port_type = PortType::UpstreamPort;
    pcie.flr = false;
    ConfigBuilder::bridge(0x10b5, 0x8733, 0x06_04_00)
        .revision(0xca)
        .bridge_windows(
            (1, 2, 4),
            (0xfb00_0000, 0xfbff_ffff),
            (0x38_0000_0000, 0x38_ffff_ffff),
        )
        .pm(false)
        .pcie(pcie)
        .aer()
        .virtual_channel()
}

/// CPU root port with ACS and DPC.
pub fn root_port() -> ConfigBuilder {
    let mut pcie = PcieOptions::endpoint(LinkSpeed::Gt8, 16);
    pcie.port_type = PortType::RootPort;
    pcie.flr = false;
    pcie.slot = Some((false, false, 1));
    pcie.ari_forwarding = true;
    ConfigBuilder::bridge(0x8086, 0x2030, 0x06_04_00)
        .revision(0x04)
        .bridge_windows(
            (0, 1, 4),
            (0xfb00_0000, 0xfbff_ffff),
            (0x38_0000_0000, 0x38_ffff_ffff),
        )
        .msi(1)
        .pcie(pcie)
        .pm(false)
        .aer()
        .acs(0x001f, 0x001d)
        .dpc()
}

/// NTB adapter function (PEX8733 NT port): register BAR and a 256 MiB prefetchable window BAR.
pub fn ntb_adapter() -> ConfigBuilder {
    let mut pcie = PcieOptions::endpoint(LinkSpeed::Gt8, 16);
    pcie.flr = false;
    ConfigBuilder::endpoint(0x10b5, 0x87b0, 0x06_80_00)
        .subsystem(0x10b5, 0x87b0)
        .bar32(0, 0xfbe0_0000, 256 * 1024, false)
        .bar64(2, 0x30_0000_0000, 256 * MIB, true)
        .interrupt_pin(1)
        .pm(false)
        .msi(0)
        .pcie(pcie)
        .msix(8, 0, 0x3000, 0x3800)
        .aer()
        .serial_number(0x0000_00ff_ff00_8733)
}

/// A synthetic endpoint carrying every capability the decoder knows in detail, for coverage tests.
pub fn every_capability() -> ConfigBuilder {
    let mut pcie = PcieOptions::endpoint(LinkSpeed::Gt32, 16);
    pcie.trained_speed = Some(LinkSpeed::Gt16);
    pcie.trained_width = Some(8);
    let sizes = [64 * MIB, 128 * MIB, 256 * MIB, GIB, 4 * GIB];
    ConfigBuilder::endpoint(0x1af4, 0x10ff, 0x12_00_00)
        .bar64(0, 0x40_0000_0000, GIB, true)
        .bar32(2, 0xfc00_0000, MIB, false)
        .io_bar(3, 0x1000, 256)
        .rom(0xfd00_0000, 64 * 1024, true)
        .interrupt_pin(2)
        .pm(false)
        .msi(3)
        .msix(16, 2, 0x0, 0x800)
        .pcie(pcie)
        .vendor_specific(0x08)
        .ssvid(0x1af4, 0x1100)
        .enhanced_allocation(0xfe00_0000, 0x1000)
        .advanced_features(true)
        .aer()
        .virtual_channel()
        .serial_number(0x0123_4567_89ab_cdef)
        .power_budgeting()
        .acs(0x005f, 0x0015)
        .ari(0)
        .ats()
        .sriov(&SriovOptions {
            total_vfs: 64,
            num_vfs: 4,
            first_vf_offset: 4,
            vf_stride: 2,
            vf_device_id: 0x1100,
            vf_bars: vec![(0, true, true, 2 * MIB), (2, false, false, 16 * 1024)],
        })
        .resizable_bar(&[(0, GIB, &sizes)])
        .dpc()
        .ltr()
        .l1_substates()
        .secondary_pcie(16)
        .pasid(20)
        .pri(0x20)
        .ptm()
        .dvsec(0x1e98, 0x0000)
        .doe()
        .physical_layer_16gt(16)
        .physical_layer_32gt()
        .vsec(0x0002)
}

/// Every preset with a short name, for fixtures and `pcipool` demo output.
pub fn all() -> Vec<(&'static str, ConfigBuilder)> {
    vec![
        ("nvme", nvme_ssd()),
        ("gpu", gpu()),
        ("sriov-nic", sriov_nic()),
        ("fpga", fpga()),
        ("switch-downstream", switch_downstream_port()),
        ("switch-upstream", switch_upstream_port()),
        ("root-port", root_port()),
        ("ntb", ntb_adapter()),
        ("every-capability", every_capability()),
    ]
}
