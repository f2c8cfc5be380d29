//! Crash safety: kill -9 a process in the middle of a write storm, reopen the store, and find
//! every acknowledged write, with no manual repair. Three rounds on the same data directory.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use styrman_store::{Backend, RangeRequest, embedded::EmbeddedStore};

const WRITERS: &str = "16";
/// Acknowledged writes to wait for before the kill, so the storm is well under way.
const ACKS_BEFORE_KILL: usize = 3000;

struct Acked {
    created: HashMap<String, i64>,
    /// counter key → (highest acknowledged value, its revision)
    counters: HashMap<String, (u64, i64)>,
}

fn storm_and_kill(dir: &std::path::Path) -> Acked {
    let mut child = Command::new(env!("CARGO_BIN_EXE_styrman-store-stress"))
        .arg(dir)
        .arg(WRITERS)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut acked = Acked {
        created: HashMap::new(),
        counters: HashMap::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = 0;
    let record = |line: &str, acked: &mut Acked| {
        let parts: Vec<&str> = line.split(' ').collect();
        match parts.as_slice() {
            ["created", key, rev] => {
                acked.created.insert(key.to_string(), rev.parse().unwrap());
            }
            ["updated", key, value, rev] => {
                let entry = acked.counters.entry(key.to_string()).or_insert((0, 0));
                *entry = (*entry).max((value.parse().unwrap(), rev.parse().unwrap()));
            }
            // The last line may be cut off by the kill: it was not fully acknowledged to us.
            _ => {}
        }
    };
    while seen < ACKS_BEFORE_KILL {
        let line = lines.next().expect("the storm ended early").unwrap();
        record(&line, &mut acked);
        seen += 1;
        assert!(Instant::now() < deadline, "the storm is too slow");
    }
    // SIGKILL: no destructor, no flush, no clean shutdown.
    child.kill().unwrap();
    // Lines already in the pipe were acknowledged before the kill.
    for line in lines.map_while(Result::ok) {
        record(&line, &mut acked);
    }
    child.wait().unwrap();
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut all_created = HashMap::new();
    for round in 0..3 {
        let acked = storm_and_kill(dir.path());
        assert!(
            acked.created.len() >= ACKS_BEFORE_KILL / 3,
            "round {round}: too few writes acknowledged"
        );
        all_created.extend(acked.created);

        let store = EmbeddedStore::open(dir.path()).expect("the store must reopen after kill -9 without repair");
        let max_acked = all_created.values().copied().max().unwrap();
        assert!(store.current_revision().await.unwrap() >= max_acked);
        let stored = store
            .range(RangeRequest {
                prefix: "/registry/crash/objects/".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let stored: HashMap<_, _> = stored.kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
        for (key, rev) in &all_created {
            let kv = stored
                .get(key)
                .unwrap_or_else(|| panic!("round {round}: acknowledged {key} (rev {rev}) is missing"));
            assert_eq!(kv.mod_revision, *rev, "{key}");
            assert_eq!(kv.value, styrman_store_stress_value(key), "{key} is damaged");
        }
        for (key, (value, rev)) in &acked.counters {
            let kv = store.get(key).await.unwrap().unwrap();
            let now: u64 = std::str::from_utf8(&kv.value).unwrap().parse().unwrap();
            // The write after the last acknowledged one may have committed without its answer
            // reaching us; nothing acknowledged may be missing.
            assert!(
                now == *value || now == value + 1,
                "{key}: acknowledged {value} at {rev}, found {now}"
            );
            assert!(kv.mod_revision >= *rev);
        }
        // The reopened store takes writes again.
        store
            .create(&format!("/registry/crash/after/{round}"), "ok".into())
            .await
            .unwrap();
    }
}

fn styrman_store_stress_value(key: &str) -> bytes::Bytes {
    bytes::Bytes::from(key.repeat(2048 / key.len().max(1) + 1))
}
