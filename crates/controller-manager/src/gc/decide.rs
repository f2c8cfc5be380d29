//! What the garbage collector does with an object whose owners it has looked up: the pure
//! part of upstream's attemptToDeleteItem, kept apart so every case is unit tested.

/// How an owner reference stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerState {
    /// The owner exists and is not being deleted in the foreground.
    Solid,
    /// The owner is being deleted in the foreground (`foregroundDeletion` finalizer) and waits
    /// for its dependents to go.
    Waiting,
    /// No object with the reference's uid exists where the reference points.
    Dangling,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    Background,
    Foreground,
    Orphan,
}

impl Propagation {
    pub fn as_kube(self) -> kube::api::PropagationPolicy {
        match self {
            Propagation::Background => kube::api::PropagationPolicy::Background,
            Propagation::Foreground => kube::api::PropagationPolicy::Foreground,
            Propagation::Orphan => kube::api::PropagationPolicy::Orphan,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing to do: a solid owner keeps the object, and no reference is stale.
    Keep,
    /// A solid owner keeps the object; these references (dangling, or to owners waiting on
    /// their dependents) are removed from it.
    RemoveReferences(Vec<String>),
    /// No solid owner is left: the object goes.
    Delete(Propagation),
}

pub const ORPHAN_FINALIZER: &str = "orphan";
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

/// `owners` pairs each owner reference's uid with how it stands; `has_dependents` says whether
/// the object owns anything itself; `finalizers` are the object's own.
pub fn decide(owners: &[(String, OwnerState)], has_dependents: bool, finalizers: &[String]) -> Action {
    if owners.is_empty() {
        return Action::Keep;
    }
    let solid = owners.iter().any(|(_, s)| *s == OwnerState::Solid);
    let waiting = owners.iter().any(|(_, s)| *s == OwnerState::Waiting);
    if solid {
        let stale: Vec<String> = owners
            .iter()
            .filter(|(_, s)| *s != OwnerState::Solid)
            .map(|(uid, _)| uid.clone())
            .collect();
        return if stale.is_empty() {
            Action::Keep
        } else {
            Action::RemoveReferences(stale)
        };
    }
    if waiting && has_dependents {
        // An owner waits for this object, which has dependents of its own: those must go
        // first, so this one is deleted in the foreground too.
        return Action::Delete(Propagation::Foreground);
    }
    let has = |f: &str| finalizers.iter().any(|x| x == f);
    Action::Delete(if has(ORPHAN_FINALIZER) {
        Propagation::Orphan
    } else if has(FOREGROUND_FINALIZER) {
        Propagation::Foreground
    } else {
        Propagation::Background
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use OwnerState::*;

    fn owners(states: &[OwnerState]) -> Vec<(String, OwnerState)> {
        states.iter().enumerate().map(|(i, s)| (format!("u{i}"), *s)).collect()
    }

    #[test]
    fn an_object_without_owners_is_kept() {
        assert_eq!(decide(&[], false, &[]), Action::Keep);
    }

    #[test]
    fn a_solid_owner_keeps_the_object() {
        assert_eq!(decide(&owners(&[Solid]), false, &[]), Action::Keep);
    }

    #[test]
    fn stale_references_beside_a_solid_owner_are_removed() {
        assert_eq!(
            decide(&owners(&[Dangling, Solid, Waiting]), true, &[]),
            Action::RemoveReferences(vec!["u0".into(), "u2".into()])
        );
    }

    #[test]
    fn an_object_whose_owners_are_all_gone_is_deleted_in_the_background() {
        assert_eq!(
            decide(&owners(&[Dangling, Dangling]), true, &[]),
            Action::Delete(Propagation::Background)
        );
    }

    #[test]
    fn a_waiting_owner_deletes_a_dependent_with_dependents_in_the_foreground() {
        assert_eq!(
            decide(&owners(&[Waiting]), true, &[]),
            Action::Delete(Propagation::Foreground)
        );
        assert_eq!(
            decide(&owners(&[Waiting]), false, &[]),
            Action::Delete(Propagation::Background)
        );
    }

    #[test]
    fn the_objects_own_finalizers_choose_the_policy() {
        let orphan = vec![ORPHAN_FINALIZER.to_string()];
        let foreground = vec![FOREGROUND_FINALIZER.to_string()];
        assert_eq!(
            decide(&owners(&[Dangling]), false, &orphan),
            Action::Delete(Propagation::Orphan)
        );
        assert_eq!(
            decide(&owners(&[Dangling]), false, &foreground),
            Action::Delete(Propagation::Foreground)
        );
    }
}
