//! The stable error codes of every pcipool HTTP service. A code names what the caller can act on; its
//! HTTP status follows from it, in one table.

use std::fmt;

/// A stable error code: `{ "code": "NO_SUCH_LEASE", "message": "..." }` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The body or a parameter is malformed.
    BadRequest,
    /// No token, or an unknown one.
    Unauthorized,
    /// The token's role or tenant may not do this.
    Forbidden,
    /// The tenant is not in the policy.
    UnknownTenant,
    /// No such route.
    NotFound,
    /// No such lease.
    NoSuchLease,
    /// No such device.
    NoSuchDevice,
    /// No such host.
    NoSuchHost,
    /// No such workflow.
    NoSuchWorkflow,
    /// Someone else changed or holds the device; trying again may help.
    Conflict,
    /// The device is in use where it would be taken from.
    Busy,
    /// Nothing fits the request now (devices, adapters, links).
    NoCapacity,
    /// The tenant's quota is full.
    OverQuota,
    /// The policy refuses the request.
    Policy,
    /// The lease was fenced: its epoch is older than the device's.
    StaleEpoch,
    /// The device's state does not allow it.
    IllegalTransition,
    /// The lend workflow failed and was compensated.
    LendFailed,
    /// This service does not offer it.
    Unsupported,
    /// The store failed.
    StoreError,
    /// This controller does not lead the pool (or has just stopped leading it) and could not pass the
    /// request to the one that does; trying again shortly, here or at another controller, may succeed.
    NotLeader,
    /// Anything the service did not expect.
    Internal,
}

impl ErrorCode {
    /// Every code, for tables and tests.
    pub const ALL: [Self; 21] = [
        Self::BadRequest,
        Self::Unauthorized,
        Self::Forbidden,
        Self::UnknownTenant,
        Self::NotFound,
        Self::NoSuchLease,
        Self::NoSuchDevice,
        Self::NoSuchHost,
        Self::NoSuchWorkflow,
        Self::Conflict,
        Self::Busy,
        Self::NoCapacity,
        Self::OverQuota,
        Self::Policy,
        Self::StaleEpoch,
        Self::IllegalTransition,
        Self::LendFailed,
        Self::Unsupported,
        Self::StoreError,
        Self::NotLeader,
        Self::Internal,
    ];

    /// The code as the wire spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "BAD_REQUEST",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::Forbidden => "FORBIDDEN",
            Self::UnknownTenant => "UNKNOWN_TENANT",
            Self::NotFound => "NOT_FOUND",
            Self::NoSuchLease => "NO_SUCH_LEASE",
            Self::NoSuchDevice => "NO_SUCH_DEVICE",
            Self::NoSuchHost => "NO_SUCH_HOST",
            Self::NoSuchWorkflow => "NO_SUCH_WORKFLOW",
            Self::Conflict => "CONFLICT",
            Self::Busy => "BUSY",
            Self::NoCapacity => "NO_CAPACITY",
            Self::OverQuota => "OVER_QUOTA",
            Self::Policy => "POLICY",
            Self::StaleEpoch => "STALE_EPOCH",
            Self::IllegalTransition => "ILLEGAL_TRANSITION",
            Self::LendFailed => "LEND_FAILED",
            Self::Unsupported => "UNSUPPORTED",
            Self::StoreError => "STORE_ERROR",
            Self::NotLeader => "NOT_LEADER",
            Self::Internal => "INTERNAL",
        }
    }

    /// The code a wire spelling names, if any (other services may add codes of their own).
    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == code)
    }

    /// The HTTP status an error with this code travels with. A refusal that follows from the pool's
    /// state (nothing free, a fenced epoch, a state that does not allow it, a pool without agents) is a
    /// 409 conflict with that state, not a server error: the server works, the request cannot be
    /// granted as things stand. 5xx is kept for the service failing or not leading.
    pub fn http_status(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::Unauthorized => 401,
            Self::Forbidden | Self::UnknownTenant | Self::Policy => 403,
            Self::NotFound
            | Self::NoSuchLease
            | Self::NoSuchDevice
            | Self::NoSuchHost
            | Self::NoSuchWorkflow => 404,
            Self::Conflict
            | Self::Busy
            | Self::NoCapacity
            | Self::StaleEpoch
            | Self::IllegalTransition
            | Self::Unsupported => 409,
            Self::OverQuota => 429,
            Self::Internal | Self::StoreError => 500,
            Self::LendFailed => 502,
            Self::NotLeader => 503,
        }
    }

    /// Whether trying the same request again later may succeed (the service was busy or restarting,
    /// or another request held what this one needs).
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Self::Conflict
                | Self::Busy
                | Self::NoCapacity
                | Self::StoreError
                | Self::NotLeader
                | Self::Internal
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_parses_back_from_its_spelling() {
        let back: Vec<Option<ErrorCode>> = ErrorCode::ALL
            .iter()
            .map(|c| ErrorCode::parse(c.as_str()))
            .collect();
        assert_eq!(back, ErrorCode::ALL.map(Some).to_vec());
    }

    #[test]
    fn an_unknown_code_is_none() {
        assert_eq!(ErrorCode::parse("NOT_YOUR_LEASE"), None);
    }
}
