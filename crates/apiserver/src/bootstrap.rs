//! What every cluster has from its first start: the namespaces `default`, `kube-system`,
//! `kube-public` and `kube-node-lease`.

use serde_json::json;
use styrman_store::{Store, StoreError, keys};

use crate::{kinds, object, strategy};

pub const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Creates the system namespaces that do not exist yet (several API servers may race here;
/// whoever loses finds the namespace there).
pub async fn ensure_namespaces(store: &Store) -> Result<(), StoreError> {
    let namespaces = kinds::find("", "v1", "namespaces").expect("namespaces are in the table");
    for name in SYSTEM_NAMESPACES {
        let key = keys::object_key(namespaces.storage, None, name);
        if store.get(&key).await?.is_some() {
            continue;
        }
        let mut namespace = json!({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": name}});
        strategy::prepare_for_create(namespaces, &mut namespace);
        match store.create(&key, object::encode_for_storage(&namespace)).await {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
