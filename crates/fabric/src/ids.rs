//! Identifiers of the fabric, each a validated newtype with a round-tripping text form.

use std::fmt;
use std::str::FromStr;

use pcipool_pcie::Bdf;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why an identifier's text was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Not `n<number>`.
    #[error("'{0}' is not a node id (expected n<number>, e.g. n3)")]
    Node(String),
    /// Not `n<node>:<bdf>[/vf<index>]`.
    #[error(
        "'{0}' is not a fabric device id (expected n<node>:<bdf>[/vf<index>], e.g. n2:0000:03:00.0/vf1)"
    )]
    Fdid(String),
    /// Neither a node id nor a fabric device id.
    #[error("'{0}' is neither a node id (n1) nor a fabric device id (n1:0000:03:00.0)")]
    DeviceOrHost(String),
}

macro_rules! text_serde {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d)?
                    .parse()
                    .map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A host's node id on the fabric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u32);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

impl FromStr for NodeId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.strip_prefix('n')
            .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse().ok())
            .map(NodeId)
            .ok_or_else(|| IdError::Node(s.to_owned()))
    }
}
text_serde!(NodeId);

/// A string schema with a pattern and an example: how the API documents a text-form identifier.
fn text_schema(
    pattern: String,
    description: &str,
    example: &str,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(Some(pattern))
        .description(Some(description))
        .examples([example])
        .into()
}

/// A node id's text form, for API schemas (at most nine digits, so every match fits a `u32`).
const NODE_PATTERN: &str = "n[0-9]{1,9}";

impl utoipa::PartialSchema for NodeId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        text_schema(
            format!("^{NODE_PATTERN}$"),
            "A host's node id on the fabric",
            "n3",
        )
    }
}

impl utoipa::ToSchema for NodeId {}

/// Fabric device id: lender node, address on the lender, and the VF index for a lent virtual function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fdid {
    /// The lender.
    pub node: NodeId,
    /// Address on the lender.
    pub bdf: Bdf,
    /// Virtual function index, for the `vf` access model.
    pub vf: Option<u16>,
}

impl fmt::Display for Fdid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.node, self.bdf)?;
        if let Some(vf) = self.vf {
            write!(f, "/vf{vf}")?;
        }
        Ok(())
    }
}

impl FromStr for Fdid {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || IdError::Fdid(s.to_owned());
        let (node, rest) = s.split_once(':').ok_or_else(bad)?;
        let (bdf, vf) = match rest.split_once("/vf") {
            Some((b, v)) => (b, Some(v.parse::<u16>().map_err(|_| bad())?)),
            None => (rest, None),
        };
        Ok(Self {
            node: node.parse().map_err(|_| bad())?,
            bdf: bdf.parse().map_err(|_| bad())?,
            vf,
        })
    }
}
text_serde!(Fdid);

impl utoipa::PartialSchema for Fdid {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let bdf = pcipool_pcie::bdf::BDF_PATTERN;
        text_schema(
            format!("^{NODE_PATTERN}:{bdf}(/vf[0-9]{{1,4}})?$"),
            "A fabric device id: lender node, the function's address there, and a virtual function's index",
            "n2:0000:03:00.0",
        )
    }
}

impl utoipa::ToSchema for Fdid {}

/// One NTB adapter of a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AdapterId {
    /// Host.
    pub node: NodeId,
    /// Adapter number on that host.
    pub index: u8,
}

impl fmt::Display for AdapterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/a{}", self.node, self.index)
    }
}

/// A lease, as the control plane numbers them; every mapping belongs to one.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub struct LeaseId(pub u64);

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lease-{}", self.0)
    }
}

/// A fencing epoch: strictly increasing per device across every lease it has ever had. Steps carry the
/// epoch of their lease, and a host refuses a step older than one it has already seen for the device.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    Default,
    utoipa::ToSchema,
)]
pub struct Epoch(pub u64);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "e{}", self.0)
    }
}

/// One mapping made by the fabric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MappingId(pub u64);

impl fmt::Display for MappingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "map-{}", self.0)
    }
}

/// A device, or every device of a host: what an operator's drain, undrain or quarantine clear names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceOrHost {
    /// One device.
    Device(Fdid),
    /// Every device of this host.
    Host(NodeId),
}

impl FromStr for DeviceOrHost {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(node) = s.parse() {
            return Ok(Self::Host(node));
        }
        s.parse()
            .map(Self::Device)
            .map_err(|_| IdError::DeviceOrHost(s.to_owned()))
    }
}

impl fmt::Display for DeviceOrHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Device(fdid) => fdid.fmt(f),
            Self::Host(node) => node.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_a_host_or_a_device() {
        assert!(matches!("n1".parse(), Ok(DeviceOrHost::Host(NodeId(1)))));
        assert!(matches!(
            "n1:0000:03:00.0".parse(),
            Ok(DeviceOrHost::Device(_))
        ));
        let _refused = "what".parse::<DeviceOrHost>().expect_err("neither");
    }

    #[test]
    fn fdid_with_vf_round_trips() {
        let text = "n2:0000:03:00.0/vf7";
        assert_eq!(
            text.parse::<Fdid>().map(|f| f.to_string()),
            Ok(text.to_owned())
        );
    }

    #[test]
    fn fdid_without_node_is_rejected() {
        assert_eq!(
            "0000:03:00.0".parse::<Fdid>(),
            Err(IdError::Fdid("0000:03:00.0".into()))
        );
    }

    #[test]
    fn node_id_needs_prefix() {
        assert_eq!(
            ("n12".parse::<NodeId>(), "12".parse::<NodeId>().is_err()),
            (Ok(NodeId(12)), true)
        );
    }
}
