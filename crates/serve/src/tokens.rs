//! Bearer tokens: generated secrets kept in the data directory, and operator token files.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::Path;

use pcipool_api::{Principal, Role};

use crate::ServeError;

/// A fresh random secret: 24 bytes from the kernel, as hex.
///
/// # Errors
/// `/dev/urandom` unreadable.
pub fn random_token() -> Result<String, ServeError> {
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(ServeError::io("reading /dev/urandom for a token"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Reads the token in `DIR/NAME`, or writes a fresh secret there (mode 0600) when the file is missing or
/// empty, so a restarted controller keeps the tokens its operators and agents hold.
///
/// # Errors
/// The file cannot be written or restricted.
pub fn token_file(dir: &Path, name: &str) -> Result<String, ServeError> {
    let path = dir.join(name);
    if let Ok(t) = std::fs::read_to_string(&path)
        && !t.trim().is_empty()
    {
        return Ok(t.trim().to_owned());
    }
    let t = random_token()?;
    write_token(&path, &t)?;
    Ok(t)
}

/// Writes a token to `path`, readable by its owner only.
///
/// # Errors
/// The file cannot be written or restricted.
pub fn write_token(path: &Path, token: &str) -> Result<(), ServeError> {
    std::fs::write(path, format!("{token}\n"))
        .map_err(ServeError::io(format!("writing {}", path.display())))?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(ServeError::io(format!("restricting {}", path.display())))
}

/// One token, of an admin named `admin`.
#[must_use]
pub fn admin_only(token: &str) -> BTreeMap<String, Principal> {
    BTreeMap::from([(
        token.to_owned(),
        Principal {
            name: "admin".into(),
            role: Role::Admin,
        },
    )])
}

/// The tokens of an operator's token file (TOML `[[token]]` entries with name, role and token).
///
/// # Errors
/// Unreadable file, or entries that do not parse ([`ServeError::BadInput`]).
pub fn read_token_file(path: &Path) -> Result<BTreeMap<String, Principal>, ServeError> {
    let text = std::fs::read_to_string(path)
        .map_err(ServeError::io(format!("reading {}", path.display())))?;
    pcipool_api::tokens::parse(&text)
        .map_err(|e| ServeError::BadInput(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_is_kept_private_and_reused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = token_file(dir.path(), "admin.token").expect("written");
        assert_eq!(first.len(), 48);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("admin.token"))
            .expect("exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(token_file(dir.path(), "admin.token").expect("read"), first);
    }

    #[test]
    fn a_bad_token_file_is_bad_input() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tokens.toml");
        std::fs::write(&path, "[[token]]\nname = 1\n").expect("written");
        assert!(matches!(
            read_token_file(&path),
            Err(ServeError::BadInput(_))
        ));
    }
}
