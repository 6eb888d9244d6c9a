//! Versioned binary encoding of everything the node stores or sends to peers:
//! one format-version byte, then bincode 2 of the serde form. A future format bumps
//! the byte and adds a migration arm to [`decode`].

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// The current on-disk and on-wire format.
pub const FORMAT_V1: u8 = 1;

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes a value with the current format byte in front.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(64);
    out.push(FORMAT_V1);
    bincode::serde::encode_into_std_write(value, &mut out, config())
        .map_err(|e| Error::Decode(format!("encode: {e}")))?;
    Ok(out)
}

/// Decodes a value written by [`encode`]; refuses unknown format versions and
/// trailing bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    match bytes.split_first() {
        Some((&FORMAT_V1, body)) => {
            let (value, used) = bincode::serde::decode_from_slice(body, config())
                .map_err(|e| Error::Decode(e.to_string()))?;
            if used != body.len() {
                return Err(Error::Decode(format!(
                    "{} trailing bytes after value",
                    body.len() - used
                )));
            }
            Ok(value)
        }
        Some((version, _)) => Err(Error::Decode(format!("unknown format version {version}"))),
        None => Err(Error::Decode("empty value".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let v = (7u64, String::from("venue"), vec![1u8, 2]);
        let bytes = encode(&v).expect("test value");
        assert_eq!(bytes[0], FORMAT_V1);
        assert_eq!(
            decode::<(u64, String, Vec<u8>)>(&bytes).expect("test value"),
            v
        );
        assert!(decode::<u64>(&[]).is_err());
        assert!(decode::<u64>(&[9, 1]).is_err());
        let mut trailing = encode(&5u64).expect("test value");
        trailing.push(0);
        assert!(decode::<u64>(&trailing).is_err());
    }
}
