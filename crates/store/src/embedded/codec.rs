//! The on-disk encoding of revision-log entries.
//!
//! ```text
//! kind: u8 (1 put, 2 delete) | create_revision: i64 LE | prev_mod_revision: i64 LE (0 = none)
//! | key length: u32 LE | key bytes | value bytes (empty for a delete)
//! ```
//! The value of a key lives only in the log entry of the write that produced it: the object
//! table points at that entry by revision, as etcd's key index points into its MVCC store, so a
//! write stores its value once.

use bytes::Bytes;

use crate::{Event, EventKind, KeyValue, Revision};

const PUT: u8 = 1;
const DELETE: u8 = 2;
const HEADER: usize = 1 + 8 + 8 + 4;

/// A decoded log entry, borrowing from the page it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogEntry<'a> {
    pub kind: EventKind,
    pub create_revision: Revision,
    /// The revision of the entry holding the key's previous value; 0 for a creation.
    pub prev_mod_revision: Revision,
    pub key: &'a str,
    pub value: &'a [u8],
}

impl<'a> LogEntry<'a> {
    #[cfg(test)]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.key.len() + self.value.len());
        self.encode_into(&mut out);
        out
    }

    /// Appends the encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.reserve(HEADER + self.key.len() + self.value.len());
        out.push(match self.kind {
            EventKind::Put => PUT,
            EventKind::Delete => DELETE,
        });
        out.extend_from_slice(&self.create_revision.to_le_bytes());
        out.extend_from_slice(&self.prev_mod_revision.to_le_bytes());
        out.extend_from_slice(&(self.key.len() as u32).to_le_bytes());
        out.extend_from_slice(self.key.as_bytes());
        out.extend_from_slice(self.value);
    }

    /// `None` for bytes no writer of ours produced (a damaged file).
    pub fn decode(bytes: &'a [u8]) -> Option<LogEntry<'a>> {
        if bytes.len() < HEADER {
            return None;
        }
        let kind = match bytes[0] {
            PUT => EventKind::Put,
            DELETE => EventKind::Delete,
            _ => return None,
        };
        let create_revision = i64::from_le_bytes(bytes[1..9].try_into().ok()?);
        let prev_mod_revision = i64::from_le_bytes(bytes[9..17].try_into().ok()?);
        let key_len = u32::from_le_bytes(bytes[17..21].try_into().ok()?) as usize;
        let key_end = HEADER.checked_add(key_len)?;
        let key = std::str::from_utf8(bytes.get(HEADER..key_end)?).ok()?;
        Some(LogEntry {
            kind,
            create_revision,
            prev_mod_revision,
            key,
            value: &bytes[key_end..],
        })
    }

    /// The key as of this entry, written at `revision`.
    pub fn key_value(&self, revision: Revision) -> KeyValue {
        KeyValue {
            key: self.key.to_string(),
            value: Bytes::copy_from_slice(self.value),
            create_revision: self.create_revision,
            mod_revision: revision,
        }
    }

    /// The watch event of this entry; `prev` is the key's value before it.
    pub fn event(&self, revision: Revision, prev: Option<KeyValue>) -> Event {
        Event {
            kind: self.kind,
            kv: self.key_value(revision),
            prev,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let e = LogEntry {
            kind: EventKind::Delete,
            create_revision: 7,
            prev_mod_revision: 9,
            key: "/registry/pods/default/a",
            value: b"",
        };
        assert_eq!(LogEntry::decode(&e.encode()), Some(e));
        let p = LogEntry {
            kind: EventKind::Put,
            value: b"{\"x\":1}",
            ..e
        };
        assert_eq!(LogEntry::decode(&p.encode()), Some(p));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(LogEntry::decode(b""), None);
        assert_eq!(LogEntry::decode(&[9u8; 40]), None);
        let mut bad_len = LogEntry {
            kind: EventKind::Put,
            create_revision: 1,
            prev_mod_revision: 0,
            key: "k",
            value: b"v",
        }
        .encode();
        bad_len[17] = 200;
        assert_eq!(LogEntry::decode(&bad_len), None);
    }
}
