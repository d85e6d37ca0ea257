//! Copies a result, as the client is sent it, into the segments of a cache entry: one
//! segment per packet payload, headers left out (a hit numbers its packets afresh), up
//! to a byte cap.
//!
//! A result is a column count, the column definitions, the EOF after them unless the
//! client set CLIENT_DEPRECATE_EOF, the rows, and the EOF or OK that ends them. The
//! session decides from the packets' meaning whether a result may be stored at all
//! ([`unstorable`]); the recorder only checks that what it holds has that shape.

use bytes::{Bytes, BytesMut};

use crate::cache::{CacheStatus, Recorded};
use crate::proxy::Record;
use crate::wire::mysql::codec::Reader;
use crate::wire::mysql::response::Part;
use crate::wire::mysql::{caps, status};

/// Packet header: three length bytes and the sequence id.
const HEADER_LEN: usize = 4;
/// A payload this long continues in the next packet: too large for the cache anyway.
const CONTINUED: usize = 0xFF_FFFF;

/// Why a result that was being recorded cannot be stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unstorable {
    /// The statement failed.
    Failed,
    /// It carried warnings: a hit would not repeat them to SHOW WARNINGS.
    Warnings,
    /// Not a single result set (an OK, a local file, more results behind it).
    Shape(CacheStatus),
}

/// Whether the packet the origin sent makes the reply unfit for the cache.
pub fn unstorable(part: &Part) -> Option<Unstorable> {
    match part {
        Part::Err => Some(Unstorable::Failed),
        Part::End(end) if end.warnings() > 0 => Some(Unstorable::Warnings),
        Part::End(end) if end.status() & status::MORE_RESULTS_EXISTS != 0 => {
            Some(Unstorable::Shape(CacheStatus::MultipleStatements))
        }
        Part::End(end) if end.status() & status::SESSION_STATE_CHANGED != 0 => {
            Some(Unstorable::Shape(CacheStatus::Uncacheable))
        }
        Part::Ok(_) | Part::LocalInfile | Part::Text | Part::Prepared(_) => {
            Some(Unstorable::Shape(CacheStatus::Uncacheable))
        }
        _ => None,
    }
}

/// The index of the segment that holds the EOF after the column definitions, for a
/// client without CLIENT_DEPRECATE_EOF; `None` when the entry has none.
pub fn columns_eof_at(segments: &[Bytes], client_caps: u32) -> Option<usize> {
    if client_caps & caps::DEPRECATE_EOF != 0 {
        return None;
    }
    let columns = column_count(segments.first()?)?;
    usize::try_from(columns).ok()?.checked_add(1)
}

fn column_count(payload: &Bytes) -> Option<u64> {
    Reader::new("column count", payload.clone()).lenenc().ok()
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    Recording,
    Oversized,
    Unusable,
}

/// A recording in progress.
#[derive(Debug)]
pub struct Recorder {
    buffer: BytesMut,
    /// Where each payload ends in `buffer`.
    ends: Vec<usize>,
    limit: usize,
    client_caps: u32,
    state: State,
}

impl Recorder {
    /// Records a result sent to a client with `client_caps`, up to `limit` bytes.
    pub fn new(limit: usize, client_caps: u32) -> Recorder {
        Recorder {
            buffer: BytesMut::new(),
            ends: Vec::new(),
            limit,
            client_caps,
            state: State::Recording,
        }
    }
}

/// Segments before the rows: the column count, the definitions, and their EOF.
fn head_len(first: &Bytes, client_caps: u32) -> Option<usize> {
    let columns = usize::try_from(column_count(first)?).ok()?;
    let eof = usize::from(client_caps & caps::DEPRECATE_EOF == 0);
    columns.checked_add(1 + eof)
}

impl Record for Recorder {
    /// The bytes the client was sent for one origin packet: whole packets with headers.
    type Message = [u8];

    fn accept(&mut self, written: &[u8]) {
        if self.state != State::Recording {
            return;
        }
        let mut rest = written;
        while let Some(header) = rest.get(..HEADER_LEN) {
            let len =
                usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
            let Some(payload) = rest.get(HEADER_LEN..HEADER_LEN + len) else {
                self.state = State::Unusable;
                return;
            };
            if len == CONTINUED || self.buffer.len() + len > self.limit {
                self.state = State::Oversized;
                self.buffer = BytesMut::new();
                self.ends.clear();
                return;
            }
            self.buffer.extend_from_slice(payload);
            self.ends.push(self.buffer.len());
            rest = &rest[HEADER_LEN + len..];
        }
    }

    fn gave_up(&self) -> Option<Recorded> {
        match self.state {
            State::Oversized => Some(Recorded::Oversized),
            State::Unusable => Some(Recorded::Unusable),
            State::Recording => None,
        }
    }

    fn finish(self) -> Recorded {
        if let Some(outcome) = self.gave_up() {
            return outcome;
        }
        let client_caps = self.client_caps;
        let buffer = self.buffer.freeze();
        let mut start = 0;
        let segments: Vec<Bytes> = self
            .ends
            .iter()
            .map(|&end| {
                let segment = buffer.slice(start..end);
                start = end;
                segment
            })
            .collect();
        let head = segments
            .first()
            .and_then(|first| head_len(first, client_caps));
        match head {
            // The head, then the rows, then the terminator.
            Some(head) if segments.len() > head => Recorded::Complete {
                has_rows: segments.len() > head + 1,
                segments,
            },
            _ => Recorded::Unusable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::mysql::write_packet;

    fn written(payloads: &[&[u8]]) -> Vec<Vec<u8>> {
        payloads
            .iter()
            .enumerate()
            .map(|(seq, payload)| {
                let mut out = BytesMut::new();
                write_packet(&mut out, seq as u8 + 1, payload);
                out.to_vec()
            })
            .collect()
    }

    const RESULT: &[&[u8]] = &[b"\x01", b"col", b"\x01a", b"\xfe\x00\x00\x02\x00\x00\x00"];

    #[test]
    fn a_result_becomes_one_segment_per_payload() {
        let mut recorder = Recorder::new(1 << 10, caps::DEPRECATE_EOF);
        for packet in written(RESULT) {
            recorder.accept(&packet);
        }
        let Recorded::Complete { segments, has_rows } = recorder.finish() else {
            panic!("complete");
        };
        assert!(has_rows);
        let payloads: Vec<&[u8]> = segments.iter().map(|s| &s[..]).collect();
        assert_eq!(payloads, RESULT);
    }

    #[test]
    fn an_old_clients_result_has_the_columns_eof() {
        let result: &[&[u8]] = &[b"\x01", b"col", b"\xfe\0\0\x02\0", b"\xfe\0\0\x02\0"];
        let mut recorder = Recorder::new(1 << 10, 0);
        // Several packets written at once count one by one.
        recorder.accept(&written(result).concat());
        let Recorded::Complete { segments, has_rows } = recorder.finish() else {
            panic!("complete");
        };
        assert!(!has_rows);
        assert_eq!(columns_eof_at(&segments, 0), Some(2));
        assert_eq!(columns_eof_at(&segments, caps::DEPRECATE_EOF), None);
    }

    #[test]
    fn too_large_or_cut_short_is_not_stored() {
        let mut recorder = Recorder::new(4, caps::DEPRECATE_EOF);
        for packet in written(RESULT) {
            recorder.accept(&packet);
        }
        assert_eq!(recorder.gave_up(), Some(Recorded::Oversized));
        let mut recorder = Recorder::new(1 << 10, caps::DEPRECATE_EOF);
        for packet in &written(RESULT)[..2] {
            recorder.accept(packet);
        }
        assert_eq!(recorder.finish(), Recorded::Unusable);
    }
}
