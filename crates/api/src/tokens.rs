//! The token file: who may call the API, and in which role.
//!
//! ```toml
//! [[token]]
//! name = "ops"          # shown as the actor in the audit log
//! role = "operator"     # admin | operator | agent | tenant
//! token = "8c1f..."     # the bearer secret, at least 16 characters
//! ```
//!
//! A tenant token's `name` is the tenant: it borrows as that tenant and sees only its own leases. An
//! agent token named after a host (`n3`) may register and heartbeat for that host only; give each host its
//! own.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::{Principal, Role};

/// Why a token file was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenFileError {
    /// Not TOML of the expected shape.
    #[error("token file: {0}")]
    Syntax(String),
    /// A role name that does not exist.
    #[error("token {name:?}: unknown role {role:?} (admin, operator, agent, tenant)")]
    Role {
        /// Entry name.
        name: String,
        /// The role given.
        role: String,
    },
    /// A secret too short to be one.
    #[error("token {0:?}: the secret must be at least 16 characters without spaces")]
    Weak(String),
    /// The same secret twice (it would be ambiguous who is calling).
    #[error("token {0:?}: the same secret is already given to another entry")]
    Duplicate(String),
    /// No entries.
    #[error("token file lists no [[token]] entries")]
    Empty,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    token: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    role: String,
    token: String,
}

/// Parses a token file into the server's secret -> principal map.
///
/// # Errors
/// [`TokenFileError`].
pub fn parse(text: &str) -> Result<BTreeMap<String, Principal>, TokenFileError> {
    let file: File = toml::from_str(text).map_err(|e| TokenFileError::Syntax(e.to_string()))?;
    if file.token.is_empty() {
        return Err(TokenFileError::Empty);
    }
    let mut out = BTreeMap::new();
    for e in file.token {
        let role = match e.role.as_str() {
            "admin" => Role::Admin,
            "operator" => Role::Operator,
            "agent" => Role::Agent,
            "tenant" => Role::Tenant,
            _ => {
                return Err(TokenFileError::Role {
                    name: e.name,
                    role: e.role,
                });
            }
        };
        if e.token.len() < 16 || e.token.chars().any(char::is_whitespace) {
            return Err(TokenFileError::Weak(e.name));
        }
        if out.contains_key(&e.token) {
            return Err(TokenFileError::Duplicate(e.name));
        }
        out.insert(e.token, Principal { name: e.name, role });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_role() {
        let map = parse(
            r#"
            [[token]]
            name = "root"
            role = "admin"
            token = "aaaaaaaaaaaaaaaa1"
            [[token]]
            name = "ops"
            role = "operator"
            token = "bbbbbbbbbbbbbbbb2"
            [[token]]
            name = "n1"
            role = "agent"
            token = "cccccccccccccccc3"
            [[token]]
            name = "acme"
            role = "tenant"
            token = "dddddddddddddddd4"
            "#,
        )
        .unwrap();
        assert_eq!(map.len(), 4);
        assert_eq!(map["dddddddddddddddd4"].role, Role::Tenant);
        assert_eq!(map["dddddddddddddddd4"].name, "acme");
        assert_eq!(map["bbbbbbbbbbbbbbbb2"].role, Role::Operator);
    }

    #[test]
    fn refuses_bad_files() {
        let one = |role: &str, token: &str| {
            format!("[[token]]\nname = \"x\"\nrole = \"{role}\"\ntoken = \"{token}\"\n")
        };
        assert!(matches!(
            parse(&one("root", "aaaaaaaaaaaaaaaa")),
            Err(TokenFileError::Role { .. })
        ));
        assert_eq!(
            parse(&one("admin", "short")),
            Err(TokenFileError::Weak("x".into()))
        );
        assert_eq!(
            parse(&one("admin", "has a space in it ok")),
            Err(TokenFileError::Weak("x".into()))
        );
        let twice = format!(
            "{}{}",
            one("admin", "aaaaaaaaaaaaaaaa"),
            one("tenant", "aaaaaaaaaaaaaaaa")
        );
        assert_eq!(parse(&twice), Err(TokenFileError::Duplicate("x".into())));
        assert_eq!(parse(""), Err(TokenFileError::Empty));
        assert!(matches!(
            parse("[[token]]\nname = 1"),
            Err(TokenFileError::Syntax(_))
        ));
        assert!(matches!(
            parse(&format!("{}extra = 1\n", one("admin", "aaaaaaaaaaaaaaaa"))),
            Err(TokenFileError::Syntax(_))
        ));
    }
}
