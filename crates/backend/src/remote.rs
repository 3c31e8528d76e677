//! [`DeviceControl`] as messages, for a host whose kernel sits in another process (the simulated
//! fabric's process plays every host's hardware; a host daemon could serve a real kernel the same way).
//! One request type and one answer type, so the two ends share a single definition: [`serve`] answers
//! a [`HostOp`] on the host's side, and the agent's transport turns the answer back into the trait's
//! return values.

use pcipool_fabric::Fdid;
use pcipool_pcie::{Bdf, ResetMethod};
use serde::{Deserialize, Serialize};

use crate::control::{DeviceControl, DeviceError, DeviceHealth};

/// The most config space one read may ask for (a whole extended config space).
pub const MAX_CONFIG_READ: u16 = 4096;

/// One [`DeviceControl`] primitive, as a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
#[allow(
    missing_docs,
    reason = "each variant is the DeviceControl method of the same name"
)]
pub enum HostOp {
    ReadConfig {
        bdf: Bdf,
        offset: u16,
        len: u16,
    },
    WriteConfig {
        bdf: Bdf,
        offset: u16,
        data: Vec<u8>,
    },
    Driver {
        bdf: Bdf,
    },
    Users {
        bdf: Bdf,
    },
    Unbind {
        bdf: Bdf,
    },
    Bind {
        bdf: Bdf,
        driver: String,
    },
    Reset {
        bdf: Bdf,
        method: ResetMethod,
    },
    BusyBusSiblings {
        bdf: Bdf,
    },
    AtResetBaseline {
        bdf: Bdf,
    },
    VfCount {
        pf: Bdf,
    },
    EnableVfs {
        pf: Bdf,
        count: u16,
    },
    Borrowed,
    HotAdd {
        remote: Fdid,
    },
    HotRemove {
        bdf: Bdf,
    },
    Health {
        bdf: Bdf,
    },
}

/// What a primitive returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "value", content = "detail", rename_all = "snake_case")]
pub enum HostValue {
    /// Nothing to return.
    Done,
    /// Config-space bytes.
    Bytes(Vec<u8>),
    /// A driver, or none.
    Driver(Option<String>),
    /// A count (users, VFs).
    Count(u32),
    /// Functions.
    Functions(Vec<Bdf>),
    /// Yes or no.
    Flag(bool),
    /// Borrowed functions: where each appears, and whose it is.
    Borrowed(Vec<(Bdf, Fdid)>),
    /// Where a hot-added function appeared.
    At(Bdf),
    /// A function's health.
    Health(DeviceHealth),
}

/// The answer to a [`HostOp`].
pub type HostReply = Result<HostValue, DeviceError>;

/// Carries out `op` on `host`.
pub fn serve(host: &mut impl DeviceControl, op: HostOp) -> HostReply {
    Ok(match op {
        HostOp::ReadConfig { bdf, offset, len } => {
            let len = len.min(MAX_CONFIG_READ);
            let mut buf = vec![0u8; usize::from(len)];
            host.read_config(bdf, offset, &mut buf)?;
            HostValue::Bytes(buf)
        }
        HostOp::WriteConfig { bdf, offset, data } => {
            host.write_config(bdf, offset, &data)?;
            HostValue::Done
        }
        HostOp::Driver { bdf } => HostValue::Driver(host.driver(bdf)?),
        HostOp::Users { bdf } => HostValue::Count(host.users(bdf)?),
        HostOp::Unbind { bdf } => {
            host.unbind(bdf)?;
            HostValue::Done
        }
        HostOp::Bind { bdf, driver } => {
            host.bind(bdf, &driver)?;
            HostValue::Done
        }
        HostOp::Reset { bdf, method } => {
            host.reset(bdf, method)?;
            HostValue::Done
        }
        HostOp::BusyBusSiblings { bdf } => HostValue::Functions(host.busy_bus_siblings(bdf)?),
        HostOp::AtResetBaseline { bdf } => HostValue::Flag(host.at_reset_baseline(bdf)?),
        HostOp::VfCount { pf } => HostValue::Count(u32::from(host.vf_count(pf)?)),
        HostOp::EnableVfs { pf, count } => {
            host.enable_vfs(pf, count)?;
            HostValue::Done
        }
        HostOp::Borrowed => HostValue::Borrowed(host.borrowed()?),
        HostOp::HotAdd { remote } => HostValue::At(host.hot_add(remote)?),
        HostOp::HotRemove { bdf } => {
            host.hot_remove(bdf)?;
            HostValue::Done
        }
        HostOp::Health { bdf } => HostValue::Health(host.health(bdf)?),
    })
}

/// A transport that carries [`HostOp`]s to a host in another process.
pub trait HostLink {
    /// Sends `op` and returns the host's answer.
    ///
    /// # Errors
    /// [`DeviceError::Unreachable`] when the host cannot be reached; the host's own errors as it
    /// reported them.
    fn call(&self, op: &HostOp) -> HostReply;
}

/// [`DeviceControl`] of a host reached through a [`HostLink`].
#[derive(Debug, Clone)]
pub struct RemoteHost<L>(pub L);

fn unexpected(op: &str, got: &HostValue) -> DeviceError {
    DeviceError::BadReply(format!("{op} answered {got:?}"))
}

impl<L: HostLink> DeviceControl for RemoteHost<L> {
    fn read_config(&self, bdf: Bdf, offset: u16, buf: &mut [u8]) -> Result<(), DeviceError> {
        let len = u16::try_from(buf.len()).map_err(|_| DeviceError::ConfigRange {
            bdf,
            offset,
            len: buf.len(),
        })?;
        match self.0.call(&HostOp::ReadConfig { bdf, offset, len })? {
            HostValue::Bytes(b) if b.len() == buf.len() => {
                buf.copy_from_slice(&b);
                Ok(())
            }
            other => Err(unexpected("read_config", &other)),
        }
    }
    fn write_config(&mut self, bdf: Bdf, offset: u16, data: &[u8]) -> Result<(), DeviceError> {
        let op = HostOp::WriteConfig {
            bdf,
            offset,
            data: data.to_vec(),
        };
        done(self.0.call(&op)?, "write_config")
    }
    fn driver(&self, bdf: Bdf) -> Result<Option<String>, DeviceError> {
        match self.0.call(&HostOp::Driver { bdf })? {
            HostValue::Driver(d) => Ok(d),
            other => Err(unexpected("driver", &other)),
        }
    }
    fn users(&self, bdf: Bdf) -> Result<u32, DeviceError> {
        match self.0.call(&HostOp::Users { bdf })? {
            HostValue::Count(n) => Ok(n),
            other => Err(unexpected("users", &other)),
        }
    }
    fn unbind(&mut self, bdf: Bdf) -> Result<(), DeviceError> {
        done(self.0.call(&HostOp::Unbind { bdf })?, "unbind")
    }
    fn bind(&mut self, bdf: Bdf, driver: &str) -> Result<(), DeviceError> {
        let op = HostOp::Bind {
            bdf,
            driver: driver.to_owned(),
        };
        done(self.0.call(&op)?, "bind")
    }
    fn reset(&mut self, bdf: Bdf, method: ResetMethod) -> Result<(), DeviceError> {
        done(self.0.call(&HostOp::Reset { bdf, method })?, "reset")
    }
    fn busy_bus_siblings(&self, bdf: Bdf) -> Result<Vec<Bdf>, DeviceError> {
        match self.0.call(&HostOp::BusyBusSiblings { bdf })? {
            HostValue::Functions(f) => Ok(f),
            other => Err(unexpected("busy_bus_siblings", &other)),
        }
    }
    fn at_reset_baseline(&self, bdf: Bdf) -> Result<bool, DeviceError> {
        match self.0.call(&HostOp::AtResetBaseline { bdf })? {
            HostValue::Flag(f) => Ok(f),
            other => Err(unexpected("at_reset_baseline", &other)),
        }
    }
    fn vf_count(&self, pf: Bdf) -> Result<u16, DeviceError> {
        match self.0.call(&HostOp::VfCount { pf })? {
            HostValue::Count(n) => {
                u16::try_from(n).map_err(|_| unexpected("vf_count", &HostValue::Count(n)))
            }
            other => Err(unexpected("vf_count", &other)),
        }
    }
    fn enable_vfs(&mut self, pf: Bdf, count: u16) -> Result<(), DeviceError> {
        done(self.0.call(&HostOp::EnableVfs { pf, count })?, "enable_vfs")
    }
    fn borrowed(&self) -> Result<Vec<(Bdf, Fdid)>, DeviceError> {
        match self.0.call(&HostOp::Borrowed)? {
            HostValue::Borrowed(b) => Ok(b),
            other => Err(unexpected("borrowed", &other)),
        }
    }
    fn hot_add(&mut self, remote: Fdid) -> Result<Bdf, DeviceError> {
        match self.0.call(&HostOp::HotAdd { remote })? {
            HostValue::At(at) => Ok(at),
            other => Err(unexpected("hot_add", &other)),
        }
    }
    fn hot_remove(&mut self, bdf: Bdf) -> Result<(), DeviceError> {
        done(self.0.call(&HostOp::HotRemove { bdf })?, "hot_remove")
    }
    fn health(&self, bdf: Bdf) -> Result<DeviceHealth, DeviceError> {
        match self.0.call(&HostOp::Health { bdf })? {
            HostValue::Health(h) => Ok(h),
            other => Err(unexpected("health", &other)),
        }
    }
}

fn done(value: HostValue, op: &str) -> Result<(), DeviceError> {
    match value {
        HostValue::Done => Ok(()),
        other => Err(unexpected(op, &other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_op_round_trips_through_json() {
        let op = HostOp::Reset {
            bdf: "0000:03:00.0".parse().expect("address"),
            method: ResetMethod::Flr,
        };
        let text = serde_json::to_string(&op).expect("serialises");
        assert_eq!(serde_json::from_str::<HostOp>(&text).ok(), Some(op));
    }

    #[test]
    fn host_reply_error_round_trips_through_json() {
        let reply: HostReply = Err(DeviceError::NoDevice(
            "0000:03:00.0".parse().expect("address"),
        ));
        let text = serde_json::to_string(&reply).expect("serialises");
        assert_eq!(serde_json::from_str::<HostReply>(&text).ok(), Some(reply));
    }
}
