//! Users: accounts that log in and buy. Passwords arrive already hashed (argon2, by
//! the proposing node, off the log's critical path); the catalog never sees one.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::venues::check_name;

/// Longest accepted email address (RFC 5321).
pub const MAX_EMAIL_LEN: usize = 254;
/// Shortest accepted password.
pub const MIN_PASSWORD_LEN: usize = 8;
/// Longest accepted password (bounds the hashing work a request can ask for).
pub const MAX_PASSWORD_LEN: usize = 1024;

/// A user as registration proposes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewUser {
    pub user_id: Uuid,
    /// Normalized (trimmed, lower-case).
    pub email: String,
    pub name: String,
    /// PHC string of the argon2 hash.
    pub password_hash: String,
}

/// A stored user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub user_id: Uuid,
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub created_ms: i64,
}

/// Normalizes and checks an email address: one `@`, a non-empty local part, a domain
/// with a dot, no spaces or control characters.
pub fn normalize_email(email: &str) -> Result<String, String> {
    let e = email.trim().to_lowercase();
    let bad = || Err(format!("{email:?} is not a valid email address"));
    if e.is_empty()
        || e.len() > MAX_EMAIL_LEN
        || e.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return bad();
    }
    match e.split_once('@') {
        Some((local, domain))
            if !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.') =>
        {
            Ok(e)
        }
        _ => bad(),
    }
}

impl NewUser {
    /// Checks the parts the catalog stores.
    pub fn validate(&self) -> Result<(), String> {
        if normalize_email(&self.email)? != self.email {
            return Err("email must be normalized".into());
        }
        check_name("name", &self.name, false)?;
        if !self.password_hash.starts_with("$argon2") {
            return Err("password_hash must be an argon2 PHC string".into());
        }
        Ok(())
    }
}

/// Checks a password's length (its strength is the user's business beyond that).
pub fn check_password(password: &str) -> Result<(), String> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_LEN {
        return Err(format!(
            "password must be at least {MIN_PASSWORD_LEN} characters"
        ));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(format!("password must be at most {MAX_PASSWORD_LEN} bytes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalized_and_checked() {
        assert_eq!(
            normalize_email("  Fan@Example.COM "),
            Ok("fan@example.com".into())
        );
        for bad in [
            "",
            "fan",
            "fan@",
            "@example.com",
            "fan@example",
            "fan@@example.com",
            "f an@example.com",
            "fan@.com",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
        assert!(check_password("short").is_err());
        assert!(check_password("long enough").is_ok());
    }
}
