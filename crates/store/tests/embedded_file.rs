//! The embedded store's data file: it persists, and a file that is damaged, foreign, or already
//! in use is refused with an error naming it, never re-initialised.

use std::path::Path;

use styrman_store::embedded::{EmbeddedStore, FILE_NAME};
use styrman_store::{Backend, StoreError};

fn refused(dir: &Path) -> String {
    match EmbeddedStore::open(dir) {
        Ok(_) => panic!("the store opened a file it should have refused"),
        Err(e @ StoreError::Corrupt { .. }) => {
            let message = e.to_string();
            assert!(
                message.contains(&dir.join(FILE_NAME).display().to_string()),
                "error must name the file: {message}"
            );
            message
        }
        Err(other) => panic!("expected a Corrupt error, got {other}"),
    }
}

#[tokio::test]
async fn reopening_keeps_data_and_revision() {
    let dir = tempfile::tempdir().unwrap();
    let rev = {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        store.create("/registry/namespaces/default", "{}".into()).await.unwrap();
        store
            .create("/registry/namespaces/kube-system", "{}".into())
            .await
            .unwrap()
    };
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(store.current_revision().await.unwrap(), rev);
    assert_eq!(
        store
            .get("/registry/namespaces/kube-system")
            .await
            .unwrap()
            .unwrap()
            .mod_revision,
        rev
    );
    assert!(store.create("/registry/namespaces/x", "{}".into()).await.unwrap() > rev);
}

#[test]
fn a_foreign_file_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let junk = b"this is somebody's notes, not a database\n".repeat(200);
    std::fs::write(&path, &junk).unwrap();
    let message = refused(dir.path());
    assert!(message.contains("not a readable store file"), "{message}");
    assert_eq!(std::fs::read(&path).unwrap(), junk, "the file must not be touched");
}

#[test]
fn a_damaged_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        for i in 0..500 {
            store
                .create(&format!("/registry/pods/default/p{i}"), vec![b'x'; 2000].into())
                .await
                .unwrap();
        }
    });
    // Scribble over the middle of the file: every page there now fails its checksum.
    let path = dir.path().join(FILE_NAME);
    let mut bytes = std::fs::read(&path).unwrap();
    let (from, to) = (bytes.len() / 4, bytes.len() * 3 / 4);
    for b in &mut bytes[from..to] {
        *b ^= 0x5a;
    }
    std::fs::write(&path, &bytes).unwrap();
    refused(dir.path());
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "the file must not be re-initialised"
    );
}

#[test]
fn a_redb_file_of_another_program_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(redb::TableDefinition::<&str, &str>::new("settings"))
            .unwrap()
            .insert("a", "b")
            .unwrap();
        txn.commit().unwrap();
    }
    let message = refused(dir.path());
    assert!(message.contains("styrman"), "{message}");
}

#[test]
fn a_file_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = EmbeddedStore::open(dir.path()).unwrap();
    let message = refused(dir.path());
    assert!(message.contains("already open"), "{message}");
}
