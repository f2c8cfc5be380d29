//! `/healthz`, `/livez` and `/readyz`, as kube-apiserver's healthz handlers: `ok` when every
//! check passes; with `?verbose` (or when one fails) a line per check (`[+]etcd ok`,
//! `[-]etcd failed: reason withheld`) and `<endpoint> check passed|failed`; `/<endpoint>/<check>`
//! runs one check; `?exclude=<check>` skips one.

use styrman_store::Store;

use crate::request::Query;

/// The checks of an endpoint, in upstream's order.
fn checks(endpoint: &str) -> &'static [&'static str] {
    match endpoint {
        "readyz" => &["ping", "log", "etcd", "etcd-readiness"],
        _ => &["ping", "log", "etcd"],
    }
}

async fn passes(check: &str, store: &Store) -> bool {
    match check {
        "etcd" | "etcd-readiness" => store.current_revision().await.is_ok(),
        _ => true,
    }
}

/// The answer (HTTP code, text) to `/<endpoint>[/<check>]`.
pub async fn answer(endpoint: &str, check: Option<&str>, query: &Query, store: &Store) -> (u16, String) {
    let all = checks(endpoint);
    if let Some(check) = check {
        if !all.contains(&check) {
            return (404, "404 page not found\n".to_string());
        }
        return match passes(check, store).await {
            true => (200, "ok".to_string()),
            false => (500, format!("internal server error: {check} check failed\n")),
        };
    }
    // Repeated keys keep their last value in `Query`: one exclusion per request.
    let excluded: Vec<&str> = query.get("exclude").into_iter().collect();
    let mut lines = String::new();
    let mut failed = false;
    for &check in all {
        if excluded.contains(&check) {
            lines.push_str(&format!("[+]{check} excluded: ok\n"));
        } else if passes(check, store).await {
            lines.push_str(&format!("[+]{check} ok\n"));
        } else {
            failed = true;
            lines.push_str(&format!("[-]{check} failed: reason withheld\n"));
        }
    }
    for unknown in excluded.iter().filter(|e| !all.contains(e)) {
        lines.push_str(&format!(
            "warn: some health checks cannot be excluded: no matches for \"{unknown}\"\n"
        ));
    }
    if failed {
        return (500, format!("{lines}{endpoint} check failed\n"));
    }
    match query.get("verbose").is_some() {
        true => (200, format!("{lines}{endpoint} check passed\n")),
        false => (200, "ok".to_string()),
    }
}
