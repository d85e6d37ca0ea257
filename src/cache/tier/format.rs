//! What the tier writes to Redis, as rmp-serde encodes it: entries, and the notices of
//! writes instances send each other. Both carry [`FORMAT`], which is also part of every
//! key and channel name, so that instances of another version never read each other's
//! values; a value that does not decode, or carries another format, is refused.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Version of the tier's encoding. Bump it whenever a field changes.
pub const FORMAT: u32 = 1;

/// An entry as the tier stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEntry {
    /// [`FORMAT`].
    pub format: u32,
    /// When its request was sent to the origin, in milliseconds since the Unix epoch:
    /// an instance that reads it keeps its age.
    pub created_at_ms: u64,
    /// Fresh for this long, in milliseconds.
    pub max_age_ms: u64,
    /// Then served stale for this long, in milliseconds.
    pub stale_while_revalidate_ms: u64,
    /// The relations it read.
    pub tables: Vec<String>,
    /// It ran code whose reads warpdrive does not know.
    pub tables_unknown: bool,
    /// The generations of what it read, in Redis, when its query started (see
    /// [`super::TierStamp`]).
    pub generations: Vec<u64>,
    /// The origin's response bytes.
    pub segments: Vec<Bytes>,
}

/// What a write through one instance reached, as the others hear it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// [`FORMAT`].
    pub format: u32,
    /// The instance that sent it (which ignores its own notices).
    pub sender: u64,
    /// The origin database written.
    pub database: String,
    /// The tables written; `None` for anything in the database.
    pub tables: Option<Vec<String>>,
    /// An operator's purge rather than a write.
    pub purge: bool,
    /// When it was sent, in microseconds since the Unix epoch (for the propagation
    /// delay, which is only meaningful between hosts whose clocks agree).
    pub sent_at_us: u64,
}

/// Why a value from Redis was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    /// It is not rmp-serde of the expected shape.
    #[error("the value does not decode ({0})")]
    Corrupt(String),
    /// It decodes but carries another format version.
    #[error("the value has format {0}, this warpdrive reads format {FORMAT}")]
    Foreign(u32),
}

/// Encodes a value of the tier.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising these plain structs into a Vec cannot fail.
    rmp_serde::to_vec(value).unwrap_or_default()
}

/// Decodes an entry.
pub fn decode_entry(bytes: &[u8]) -> Result<StoredEntry, FormatError> {
    let entry: StoredEntry = decode(bytes)?;
    match entry.format {
        FORMAT => Ok(entry),
        other => Err(FormatError::Foreign(other)),
    }
}

/// Decodes a notice.
pub fn decode_notice(bytes: &[u8]) -> Result<Notice, FormatError> {
    let notice: Notice = decode(bytes)?;
    match notice.format {
        FORMAT => Ok(notice),
        other => Err(FormatError::Foreign(other)),
    }
}

fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, FormatError> {
    rmp_serde::from_slice(bytes).map_err(|error| FormatError::Corrupt(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> StoredEntry {
        StoredEntry {
            format: FORMAT,
            created_at_ms: 1_700_000_000_000,
            max_age_ms: 60_000,
            stale_while_revalidate_ms: 15_000,
            tables: vec!["public.t".to_owned()],
            tables_unknown: false,
            generations: vec![3, 0, 7],
            segments: vec![Bytes::from_static(b"T\0\0\0\x06"), Bytes::new()],
        }
    }

    #[test]
    fn entries_and_notices_survive_the_round_trip() {
        assert_eq!(decode_entry(&encode(&entry())), Ok(entry()));
        let notice = Notice {
            format: FORMAT,
            sender: 9,
            database: "shop".to_owned(),
            tables: None,
            purge: true,
            sent_at_us: 5,
        };
        assert_eq!(decode_notice(&encode(&notice)), Ok(notice));
    }

    #[test]
    fn corrupt_truncated_and_foreign_values_are_refused() {
        assert!(matches!(
            decode_entry(b"not msgpack"),
            Err(FormatError::Corrupt(_))
        ));
        let bytes = encode(&entry());
        assert!(matches!(
            decode_entry(&bytes[..bytes.len() - 3]),
            Err(FormatError::Corrupt(_))
        ));
        let old = StoredEntry {
            format: FORMAT + 1,
            ..entry()
        };
        assert_eq!(
            decode_entry(&encode(&old)),
            Err(FormatError::Foreign(FORMAT + 1))
        );
        // A notice is not an entry.
        let notice = Notice {
            format: FORMAT,
            sender: 1,
            database: "d".to_owned(),
            tables: Some(vec!["t".to_owned()]),
            purge: false,
            sent_at_us: 0,
        };
        assert!(decode_entry(&encode(&notice)).is_err());
    }
}
