//! The top-level decode: bytes in, [`DeviceFacts`] out.

use serde::Serialize;

use crate::bar::{Bar, ExpansionRom, decode_bars, decode_rom};
use crate::caps::{self, Capability, CapabilityDetail, PciExpress};
use crate::config::{CONVENTIONAL_SIZE, ConfigSpace, EXTENDED_SIZE, HEADER_SIZE};
use crate::ecaps::{self, ExtCapability, ExtCapabilityDetail, ResizableBar, SrIov};
use crate::error::{ConfigSpaceError, DecodeWarning};
use crate::header::{BridgeInfo, ClassCode, HeaderType, InterruptPin};
use crate::regs;

/// Sizes the kernel (sysfs `resource`) or the simulator knows; config space alone does not hold them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KnownSizes {
    /// BAR 0..=5 sizes.
    pub bars: [Option<u64>; 6],
    /// Expansion ROM size.
    pub rom: Option<u64>,
}

/// Everything pcipool reads from one function's config space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceFacts {
    /// Vendor id.
    pub vendor_id: u16,
    /// Device id.
    pub device_id: u16,
    /// Revision id.
    pub revision: u8,
    /// Class code.
    pub class: ClassCode,
    /// Built-in class name.
    pub class_name: Option<&'static str>,
    /// Subsystem vendor id (type 0 header, or bridge SSVID capability).
    pub subsystem_vendor_id: Option<u16>,
    /// Subsystem id.
    pub subsystem_id: Option<u16>,
    /// Header layout.
    pub header_type: HeaderType,
    /// Multi-function device.
    pub multifunction: bool,
    /// Command register.
    pub command: u16,
    /// Status register.
    pub status: u16,
    /// Interrupt pin.
    pub interrupt_pin: Option<InterruptPin>,
    /// Interrupt line.
    pub interrupt_line: u8,
    /// BARs.
    pub bars: Vec<Bar>,
    /// Expansion ROM.
    pub expansion_rom: Option<ExpansionRom>,
    /// Bridge registers (type 1 only).
    pub bridge: Option<BridgeInfo>,
    /// Standard capabilities in list order.
    pub capabilities: Vec<Capability>,
    /// Extended capabilities in list order.
    pub extended_capabilities: Vec<ExtCapability>,
    /// Bytes of config space that were available.
    pub config_len: usize,
    /// What was wrong but did not stop the decode.
    pub warnings: Vec<DecodeWarning>,
}

impl DeviceFacts {
    /// The PCI Express capability, if the function has one.
    pub fn pci_express(&self) -> Option<&PciExpress> {
        self.capabilities.iter().find_map(|c| match &c.detail {
            CapabilityDetail::PciExpress(e) => Some(e),
            _ => None,
        })
    }

    /// The SR-IOV capability, if any.
    pub fn sriov(&self) -> Option<&SrIov> {
        self.extended_capabilities
            .iter()
            .find_map(|c| match &c.detail {
                ExtCapabilityDetail::SrIov(s) => Some(s),
                _ => None,
            })
    }

    /// The resizable BAR capability, if any.
    pub fn resizable_bar(&self) -> Option<&ResizableBar> {
        self.extended_capabilities
            .iter()
            .find_map(|c| match &c.detail {
                ExtCapabilityDetail::ResizableBar(r) => Some(r),
                _ => None,
            })
    }

    /// The ACS capability, if any.
    pub fn acs(&self) -> Option<&crate::ecaps::Acs> {
        self.extended_capabilities
            .iter()
            .find_map(|c| match &c.detail {
                ExtCapabilityDetail::Acs(a) => Some(a),
                _ => None,
            })
    }

    /// First standard capability with `id`.
    pub fn capability(&self, id: u8) -> Option<&Capability> {
        self.capabilities.iter().find(|c| c.id == id)
    }

    /// First extended capability with `id`.
    pub fn ext_capability(&self, id: u16) -> Option<&ExtCapability> {
        self.extended_capabilities.iter().find(|c| c.id == id)
    }

    /// Facts known from ids alone, for a function whose config space could not be read (sysfs still
    /// lists `vendor`, `device` and `class`).
    pub fn from_ids(vendor_id: u16, device_id: u16, class: u32) -> Self {
        let class = ClassCode::from_u24(class);
        Self {
            vendor_id,
            device_id,
            revision: 0,
            class,
            class_name: class.name(),
            subsystem_vendor_id: None,
            subsystem_id: None,
            header_type: if class.is_pci_bridge() {
                HeaderType::Bridge
            } else {
                HeaderType::Endpoint
            },
            multifunction: false,
            command: 0,
            status: 0,
            interrupt_pin: None,
            interrupt_line: 0,
            bars: Vec::new(),
            expansion_rom: None,
            bridge: None,
            capabilities: Vec::new(),
            extended_capabilities: Vec::new(),
            config_len: 0,
            warnings: Vec::new(),
        }
    }

    /// Whether the function is a bridge (type 1 header or PCI bridge class).
    pub fn is_bridge(&self) -> bool {
        self.header_type == HeaderType::Bridge || self.class.is_pci_bridge()
    }
}

/// Decodes a config space with no outside knowledge of BAR sizes.
///
/// # Errors
/// See [`decode_with_sizes`].
pub fn decode(bytes: &[u8]) -> Result<DeviceFacts, ConfigSpaceError> {
    decode_with_sizes(bytes, &KnownSizes::default())
}

/// Decodes a config space of 64 to 4096 bytes. Never panics; problems inside the config space become
/// [`DeviceFacts::warnings`].
///
/// # Errors
/// [`ConfigSpaceError::TooShort`] / [`ConfigSpaceError::TooLong`] for a bad length,
/// [`ConfigSpaceError::DeviceAbsent`] when the vendor id reads 0xffff.
pub fn decode_with_sizes(
    bytes: &[u8],
    sizes: &KnownSizes,
) -> Result<DeviceFacts, ConfigSpaceError> {
    let cfg = ConfigSpace::new(bytes)?;
    let word = |o| cfg.u16(o).unwrap_or(0);
    let byte = |o| cfg.u8(o).unwrap_or(0);
    let vendor_id = word(regs::VENDOR_ID);
    if vendor_id == 0xffff {
        return Err(ConfigSpaceError::DeviceAbsent);
    }
    let mut warnings = Vec::new();
    let header_byte = byte(regs::HEADER_TYPE);
    let header_type = HeaderType::from_byte(header_byte);
    if let HeaderType::Unknown(layout) = header_type {
        warnings.push(DecodeWarning::UnknownHeaderType { layout });
    }
    let class = ClassCode::from_u24(cfg.u32(regs::REVISION_ID).unwrap_or(0) >> 8);
    let status = word(regs::STATUS);
    let bars = decode_bars(&cfg, header_type, &sizes.bars, &mut warnings);
    let expansion_rom = decode_rom(&cfg, header_type, sizes.rom);
    let bridge = (header_type == HeaderType::Bridge).then(|| BridgeInfo::decode(&cfg));

    let capabilities = if status & regs::STATUS_CAP_LIST == 0 {
        Vec::new()
    } else {
        let pointer = match header_type {
            HeaderType::CardBus => regs::CARDBUS_CAPABILITY_LIST,
            _ => regs::CAPABILITY_LIST,
        };
        caps::walk(&cfg, pointer, &mut warnings)
    };
    // Only PCIe and PCI-X mode 2 functions decode the extended space; on others, bytes above 0x100
    // often alias the header (the kernel sets cfg_size to 256 for them, and lspci skips the walk).
    let extended_space = capabilities
        .iter()
        .any(|c| c.id == regs::CAP_ID_EXP || c.id == regs::CAP_ID_PCIX);
    let extended_capabilities = if extended_space {
        ecaps::walk(&cfg, &mut warnings)
    } else {
        Vec::new()
    };
    for cap in &extended_capabilities {
        if cap.id != regs::ECAP_ID_REBAR {
            continue;
        }
        if let Some(count) = ecaps::rebar_declared_count(&cfg, cap.offset)
            && !(1..=6).contains(&count)
        {
            warnings.push(DecodeWarning::ResizableBarCountInvalid {
                at: cap.offset,
                count,
            });
        }
    }
    let partial = (bytes.len() < CONVENTIONAL_SIZE && status & regs::STATUS_CAP_LIST != 0)
        || (bytes.len() < EXTENDED_SIZE && extended_space);
    if partial && bytes.len() >= HEADER_SIZE {
        warnings.push(DecodeWarning::PartialConfigSpace { len: bytes.len() });
    }

    let (subsystem_vendor_id, subsystem_id) = match header_type {
        HeaderType::Endpoint => (
            Some(word(regs::SUBSYSTEM_VENDOR_ID)),
            Some(word(regs::SUBSYSTEM_ID)),
        ),
        _ => capabilities
            .iter()
            .find_map(|c| match c.detail {
                CapabilityDetail::SubsystemVendor {
                    subsystem_vendor_id,
                    subsystem_id,
                } => Some((Some(subsystem_vendor_id), Some(subsystem_id))),
                _ => None,
            })
            .unwrap_or((None, None)),
    };

    Ok(DeviceFacts {
        vendor_id,
        device_id: word(regs::DEVICE_ID),
        revision: byte(regs::REVISION_ID),
        class,
        class_name: class.name(),
        subsystem_vendor_id,
        subsystem_id,
        header_type,
        multifunction: header_byte & 0x80 != 0,
        command: word(regs::COMMAND),
        status,
        interrupt_pin: InterruptPin::from_byte(byte(regs::INTERRUPT_PIN)),
        interrupt_line: byte(regs::INTERRUPT_LINE),
        bars,
        expansion_rom,
        bridge,
        capabilities,
        extended_capabilities,
        config_len: bytes.len(),
        warnings,
    })
}
