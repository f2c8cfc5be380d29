//! Stored objects decoded once for every watch that needs them decoded. Each watch with a
//! label or field selector (a kubelet's `spec.nodeName=`, a controller's metadata-only watch)
//! must look inside each event's object, and every one of them sees the same events at about
//! the same time: the first decodes, the others share its value. Keyed by the revision that
//! wrote the bytes, which names them uniquely (one write, one revision).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use styrman_store::Revision;

use crate::kinds::Kind;

/// Decoded objects kept: a few seconds of a busy cluster's events, so watches that lag each
/// other a little still share.
const CAPACITY: usize = 8192;

#[derive(Default)]
pub struct Decoded {
    inner: Mutex<Memo>,
}

#[derive(Default)]
struct Memo {
    values: HashMap<Revision, Arc<Value>>,
    order: VecDeque<Revision>,
}

impl Decoded {
    /// The object `stored` (written at `revision`) as `kind`'s version shows it.
    pub fn get(&self, kind: &Kind, stored: &[u8], revision: Revision) -> Option<Arc<Value>> {
        if crate::conversion::converts(kind) {
            // Converted per version: not shared (events and HPAs, a small share of traffic).
            return crate::conversion::decode(kind, stored, revision).ok().map(Arc::new);
        }
        if let Some(value) = self.inner.lock().expect("decoded lock").values.get(&revision) {
            return Some(Arc::clone(value));
        }
        let value = Arc::new(crate::object::decode_from_storage(stored, revision).ok()?);
        let mut memo = self.inner.lock().expect("decoded lock");
        if memo.values.insert(revision, Arc::clone(&value)).is_none() {
            memo.order.push_back(revision);
            if memo.order.len() > CAPACITY
                && let Some(oldest) = memo.order.pop_front()
            {
                memo.values.remove(&oldest);
            }
        }
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_write_is_decoded_once() {
        let pods = crate::kinds::find("", "v1", "pods").unwrap();
        let decoded = Decoded::default();
        let stored = br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"}}"#;
        let first = decoded.get(pods, stored, 7).unwrap();
        let second = decoded.get(pods, stored, 7).unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(first["metadata"]["resourceVersion"], "7");
        for revision in 8..8 + CAPACITY as i64 {
            decoded.get(pods, stored, revision);
        }
        assert!(
            !Arc::ptr_eq(&first, &decoded.get(pods, stored, 7).unwrap()),
            "the oldest are forgotten"
        );
    }
}
