//! The ownership graph: every object the collector watches, by uid, with its owner references,
//! and for every uid the objects that name it as an owner (whether or not that owner has been
//! seen: a reference to an object that never existed is what makes a dependent dangling).
//!
//! Updating the graph says which objects need a look ([`Graph::upsert`], [`Graph::remove`]).

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::decide::{FOREGROUND_FINALIZER, ORPHAN_FINALIZER};

/// Which watched resource an object came from (an index into the collector's resource list).
pub type ResourceId = usize;

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub resource: ResourceId,
    pub namespace: Option<String>,
    pub name: String,
    pub uid: String,
    pub owners: Vec<OwnerReference>,
    pub finalizers: Vec<String>,
    pub being_deleted: bool,
}

impl Node {
    pub fn has_finalizer(&self, finalizer: &str) -> bool {
        self.finalizers.iter().any(|f| f == finalizer)
    }

    /// Being deleted, and a finalizer asks the collector to act first.
    pub fn needs_collector(&self) -> bool {
        self.being_deleted && (self.has_finalizer(ORPHAN_FINALIZER) || self.has_finalizer(FOREGROUND_FINALIZER))
    }

    /// Being deleted in the foreground: waits until its blocking dependents are gone.
    pub fn waits_for_dependents(&self) -> bool {
        self.being_deleted && self.has_finalizer(FOREGROUND_FINALIZER)
    }

    /// This object's reference to `owner`, if it has one.
    pub fn reference_to(&self, owner: &str) -> Option<&OwnerReference> {
        self.owners.iter().find(|r| r.uid == owner)
    }
}

#[derive(Default)]
pub struct Graph {
    nodes: HashMap<String, Node>,
    /// owner uid → uids of the objects referencing it.
    dependents: HashMap<String, BTreeSet<String>>,
}

impl Graph {
    pub fn get(&self, uid: &str) -> Option<&Node> {
        self.nodes.get(uid)
    }

    pub fn dependents_of(&self, uid: &str) -> Vec<&Node> {
        self.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|d| self.nodes.get(d))
            .collect()
    }

    pub fn has_dependents(&self, uid: &str) -> bool {
        self.dependents.get(uid).is_some_and(|d| !d.is_empty())
    }

    /// The uids of `resource`'s objects.
    pub fn uids_of(&self, resource: ResourceId) -> Vec<String> {
        self.nodes
            .values()
            .filter(|n| n.resource == resource)
            .map(|n| n.uid.clone())
            .collect()
    }

    /// Adds or updates `node`; returns the uids that need a look.
    pub fn upsert(&mut self, node: Node) -> Vec<String> {
        let mut look = Vec::new();
        let old = self.nodes.get(&node.uid);
        let old_owner_uids: BTreeSet<String> = old
            .map(|o| o.owners.iter().map(|r| r.uid.clone()).collect())
            .unwrap_or_default();
        let new_owner_uids: BTreeSet<String> = node.owners.iter().map(|r| r.uid.clone()).collect();
        let owners_changed = old.is_none_or(|o| o.owners != node.owners);
        if node.needs_collector() || (owners_changed && !node.owners.is_empty()) {
            look.push(node.uid.clone());
        }
        for gone in old_owner_uids.difference(&new_owner_uids) {
            if let Some(set) = self.dependents.get_mut(gone) {
                set.remove(&node.uid);
                if set.is_empty() {
                    self.dependents.remove(gone);
                }
            }
            // An owner waiting for its dependents may have just lost its last blocking one.
            if self.nodes.get(gone).is_some_and(Node::waits_for_dependents) {
                look.push(gone.clone());
            }
        }
        for added in new_owner_uids.difference(&old_owner_uids) {
            self.dependents
                .entry(added.clone())
                .or_default()
                .insert(node.uid.clone());
        }
        // A blocking reference turned non-blocking also frees a waiting owner.
        if let Some(old) = old {
            for r in &old.owners {
                let was_blocking = r.block_owner_deletion == Some(true);
                let blocks = node
                    .reference_to(&r.uid)
                    .is_some_and(|n| n.block_owner_deletion == Some(true));
                if was_blocking && !blocks && self.nodes.get(&r.uid).is_some_and(Node::waits_for_dependents) {
                    look.push(r.uid.clone());
                }
            }
        }
        self.nodes.insert(node.uid.clone(), node);
        look.sort();
        look.dedup();
        look
    }

    /// Removes the object `uid`; returns the uids that need a look: its dependents (their owner
    /// is gone) and its owners waiting for their dependents.
    pub fn remove(&mut self, uid: &str) -> Vec<String> {
        let Some(node) = self.nodes.remove(uid) else {
            return Vec::new();
        };
        let mut look: Vec<String> = self.dependents.get(uid).into_iter().flatten().cloned().collect();
        for r in &node.owners {
            if let Some(set) = self.dependents.get_mut(&r.uid) {
                set.remove(uid);
                if set.is_empty() {
                    self.dependents.remove(&r.uid);
                }
            }
            if self.nodes.get(&r.uid).is_some_and(Node::waits_for_dependents) {
                look.push(r.uid.clone());
            }
        }
        look.sort();
        look.dedup();
        look
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(uid: &str, owners: &[(&str, bool)]) -> Node {
        Node {
            resource: 0,
            namespace: Some("default".into()),
            name: uid.into(),
            uid: uid.into(),
            owners: owners
                .iter()
                .map(|(o, block)| OwnerReference {
                    api_version: "v1".into(),
                    kind: "ConfigMap".into(),
                    name: o.to_string(),
                    uid: o.to_string(),
                    block_owner_deletion: Some(*block),
                    controller: None,
                })
                .collect(),
            finalizers: vec![],
            being_deleted: false,
        }
    }

    #[test]
    fn a_new_dependent_is_looked_at_and_indexed_under_its_owner() {
        let mut g = Graph::default();
        assert!(g.upsert(node("owner", &[])).is_empty());
        assert_eq!(g.upsert(node("dep", &[("owner", true)])), vec!["dep"]);
        assert_eq!(g.dependents_of("owner").len(), 1);
        assert!(
            g.upsert(node("dep", &[("owner", true)])).is_empty(),
            "unchanged owners: nothing to do"
        );
    }

    #[test]
    fn removing_an_owner_looks_at_its_dependents() {
        let mut g = Graph::default();
        g.upsert(node("owner", &[]));
        g.upsert(node("a", &[("owner", false)]));
        g.upsert(node("b", &[("owner", false)]));
        assert_eq!(g.remove("owner"), vec!["a", "b"]);
        // Dependents stay indexed under the missing owner: it is what makes them dangling.
        assert!(g.has_dependents("owner"));
    }

    #[test]
    fn an_owner_deleted_in_the_foreground_is_looked_at_as_dependents_go() {
        let mut g = Graph::default();
        let mut owner = node("owner", &[]);
        owner.being_deleted = true;
        owner.finalizers = vec![FOREGROUND_FINALIZER.into()];
        assert_eq!(g.upsert(owner), vec!["owner"]);
        g.upsert(node("dep", &[("owner", true)]));
        assert_eq!(g.remove("dep"), vec!["owner"]);
        assert!(!g.has_dependents("owner"));
        g.upsert(node("dep2", &[("owner", true)]));
        assert_eq!(
            g.upsert(node("dep2", &[("owner", false)])),
            vec!["dep2", "owner"],
            "unblocked"
        );
    }
}
