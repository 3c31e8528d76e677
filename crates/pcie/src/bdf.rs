//! PCI addresses: `domain:bus:device.function`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a PCI address string or its parts were rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BdfError {
    /// The text is not `[dddd:]bb:dd.f` in hex.
    #[error(
        "'{0}' is not a PCI address (expected [domain:]bus:device.function, e.g. 0000:03:00.0)"
    )]
    Syntax(String),
    /// Device number above 31.
    #[error("device number {0:#x} is above 0x1f")]
    DeviceOutOfRange(u8),
    /// Function number above 7.
    #[error("function number {0} is above 7")]
    FunctionOutOfRange(u8),
}

/// A PCI function address. The domain is 32 bits wide because Linux gives VMD and
/// Hyper-V domains numbers above 0xffff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bdf {
    domain: u32,
    bus: u8,
    device: u8,
    function: u8,
}

impl Bdf {
    /// Builds an address, checking device (0..=31) and function (0..=7).
    ///
    /// # Errors
    /// [`BdfError::DeviceOutOfRange`] or [`BdfError::FunctionOutOfRange`].
    pub fn new(domain: u32, bus: u8, device: u8, function: u8) -> Result<Self, BdfError> {
        if device > 0x1f {
            return Err(BdfError::DeviceOutOfRange(device));
        }
        if function > 7 {
            return Err(BdfError::FunctionOutOfRange(function));
        }
        Ok(Self {
            domain,
            bus,
            device,
            function,
        })
    }

    /// PCI domain (segment).
    pub fn domain(self) -> u32 {
        self.domain
    }
    /// Bus number.
    pub fn bus(self) -> u8 {
        self.bus
    }
    /// Device (slot) number, 0..=31.
    pub fn device(self) -> u8 {
        self.device
    }
    /// Function number, 0..=7.
    pub fn function(self) -> u8 {
        self.function
    }
    /// The 8-bit devfn used in requester ids.
    pub fn devfn(self) -> u8 {
        (self.device << 3) | self.function
    }
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

impl FromStr for Bdf {
    type Err = BdfError;

    /// Accepts `dddd:bb:dd.f` and `bb:dd.f` (domain 0), hex digits in either case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || BdfError::Syntax(s.to_owned());
        let (head, function) = s.rsplit_once('.').ok_or_else(syntax)?;
        let parts: Vec<&str> = head.split(':').collect();
        let (domain, bus, device) = match parts.as_slice() {
            [bus, device] => ("0", *bus, *device),
            [domain, bus, device] => (*domain, *bus, *device),
            _ => return Err(syntax()),
        };
        let hex_ok = |t: &str, max_len: usize| {
            !t.is_empty() && t.len() <= max_len && t.bytes().all(|b| b.is_ascii_hexdigit())
        };
        if !hex_ok(domain, 8) || !hex_ok(bus, 2) || !hex_ok(device, 2) || !hex_ok(function, 1) {
            return Err(syntax());
        }
        let domain = u32::from_str_radix(domain, 16).map_err(|_| syntax())?;
        let bus = u8::from_str_radix(bus, 16).map_err(|_| syntax())?;
        let device = u8::from_str_radix(device, 16).map_err(|_| syntax())?;
        let function = u8::from_str_radix(function, 16).map_err(|_| syntax())?;
        Self::new(domain, bus, device, function)
    }
}

/// The text form's pattern, for API schemas: `[domain:]bus:device.function` in hex, device 0..=1f and
/// function 0..=7, exactly what [`Bdf::from_str`] accepts.
pub const BDF_PATTERN: &str =
    "([0-9a-fA-F]{1,8}:)?[0-9a-fA-F]{1,2}:(0?[0-9a-fA-F]|1[0-9a-fA-F])\\.[0-7]";

impl utoipa::PartialSchema for Bdf {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(format!("^{BDF_PATTERN}$")))
            .description(Some(
                "A PCI function address, `[domain:]bus:device.function` in hex",
            ))
            .examples(["0000:03:00.0"])
            .into()
    }
}

impl utoipa::ToSchema for Bdf {}

impl Serialize for Bdf {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Bdf {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_full_form_round_trips() {
        let bdf: Bdf = "0000:3b:1f.7".parse().expect("valid");
        assert_eq!(bdf.to_string(), "0000:3b:1f.7");
    }

    #[test]
    fn parse_short_form_defaults_domain_zero() {
        let bdf: Bdf = "03:00.1".parse().expect("valid");
        assert_eq!(bdf, Bdf::new(0, 3, 0, 1).expect("valid"));
    }

    #[test]
    fn parse_device_above_31_is_rejected() {
        assert_eq!(
            "00:20.0".parse::<Bdf>(),
            Err(BdfError::DeviceOutOfRange(0x20))
        );
    }

    #[test]
    fn parse_function_above_7_is_rejected() {
        assert_eq!(
            "00:01.8".parse::<Bdf>(),
            Err(BdfError::FunctionOutOfRange(8))
        );
    }

    #[test]
    fn parse_garbage_is_syntax_error() {
        assert_eq!(
            "0:0:0:0.0".parse::<Bdf>(),
            Err(BdfError::Syntax("0:0:0:0.0".into()))
        );
    }

    #[test]
    fn devfn_packs_device_and_function() {
        let bdf = Bdf::new(0, 0, 0x1f, 3).expect("valid");
        assert_eq!(bdf.devfn(), 0xfb);
    }
}
