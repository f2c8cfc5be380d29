//! The endpoints and endpointslice controllers against a running `styrman server` with hollow
//! nodes (which mark bound pods Running and Ready with an IP), driven by the real kubectl:
//! who is listed, ready or not, on which ports, and what goes when pods and Services go.

use std::time::Duration;

use serde_json::Value;
use styrman_testkit::{ChildProcess, Cluster, eventually, json};

/// How long the controllers get to react. They react in well under a second: the bound is
/// tight enough to catch a sync held back by a lost track of the controller's own writes (10 s).
const REACTION: Duration = Duration::from_secs(8);
/// How long hollow nodes get to run new pods.
const POD_START: Duration = Duration::from_secs(30);

fn cluster_with_nodes(node_args: &[&str]) -> (Cluster, ChildProcess) {
    let c = Cluster::start(env!("CARGO_BIN_EXE_styrman").as_ref()).expect("start styrman server");
    let nodes = c.hollow_nodes(node_args);
    (c, nodes)
}

/// A pod labelled app=web whose container names port `http` as `port`, plus `extra_spec`.
fn pod(name: &str, port: u16, extra_spec: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: web}}}}
spec:
  containers: [{{name: app, image: nginx, ports: [{{name: http, containerPort: {port}}}]}}]
{extra_spec}"
    )
}

fn get(c: &Cluster, what: &[&str]) -> Value {
    let args: Vec<&str> = ["get"]
        .iter()
        .copied()
        .chain(what.iter().copied())
        .chain(["-o", "json"])
        .collect();
    json(&c.kubectl_ok(&args))
}

fn pod_ip(c: &Cluster, name: &str) -> String {
    get(c, &["pod", name])["status"]["podIP"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// The Endpoints' addresses as "ip:port" by readiness, sorted: (ready, not ready); each
/// address once per port of its subset.
fn endpoint_addresses(endpoints: &Value) -> (Vec<String>, Vec<String>) {
    let mut ready = Vec::new();
    let mut not_ready = Vec::new();
    for subset in endpoints["subsets"].as_array().into_iter().flatten() {
        let ports: Vec<String> = match subset["ports"].as_array() {
            Some(ports) => ports.iter().map(|p| p["port"].to_string()).collect(),
            None => vec!["-".into()],
        };
        for (list, out) in [("addresses", &mut ready), ("notReadyAddresses", &mut not_ready)] {
            for address in subset[list].as_array().into_iter().flatten() {
                for port in &ports {
                    out.push(format!("{}:{port}", address["ip"].as_str().unwrap_or("")));
                }
            }
        }
    }
    ready.sort();
    not_ready.sort();
    (ready, not_ready)
}

/// The EndpointSlices of Service `service`.
fn slices(c: &Cluster, service: &str) -> Vec<Value> {
    let list = get(
        c,
        &["endpointslices", "-l", &format!("kubernetes.io/service-name={service}")],
    );
    list["items"].as_array().cloned().unwrap_or_default()
}

/// Every slice endpoint of `service`, keyed by pod name.
fn slice_endpoints(c: &Cluster, service: &str) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = slices(c, service)
        .iter()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .map(|e| (e["targetRef"]["name"].as_str().unwrap_or("").to_string(), e))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn expect_eq<T: PartialEq + std::fmt::Debug>(seen: T, want: T) -> Result<(), String> {
    if seen == want {
        Ok(())
    } else {
        Err(format!("{seen:?}, want {want:?}"))
    }
}

#[test]
fn endpoints_and_slices_follow_the_pods_of_a_service() {
    let (c, _nodes) = cluster_with_nodes(&["--count=2", "--labels=topology.kubernetes.io/zone=zone-a"]);
    c.apply(&pod("a", 8080, ""));
    c.apply(&pod("b", 8080, ""));
    // Names its port `http` too, on another number.
    c.apply(&pod("c", 9090, ""));
    c.apply(
        "apiVersion: v1
kind: Service
metadata: {name: web, labels: {tier: front}}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
",
    );
    let mut ips = Vec::new();
    eventually("the three pods run with IPs", POD_START, || {
        ips = ["a", "b", "c"].iter().map(|p| pod_ip(&c, p)).collect();
        if ips.iter().all(|ip| !ip.is_empty()) {
            Ok(())
        } else {
            Err(format!("{ips:?}"))
        }
    });
    let (ip_a, ip_b, ip_c) = (ips[0].clone(), ips[1].clone(), ips[2].clone());
    let mut all_ready = vec![format!("{ip_a}:8080"), format!("{ip_b}:8080"), format!("{ip_c}:9090")];
    all_ready.sort();
    eventually(
        "Endpoints list the three ready pods on their own ports",
        REACTION,
        || {
            let endpoints = get(&c, &["endpoints", "web"]);
            expect_eq(endpoint_addresses(&endpoints), (all_ready.clone(), vec![]))
        },
    );

    let endpoints = get(&c, &["endpoints", "web"]);
    // The named targetPort resolved per pod: two port sets, so two subsets.
    let subsets = endpoints["subsets"].as_array().unwrap();
    assert_eq!(subsets.len(), 2, "{endpoints}");
    for subset in subsets {
        assert_eq!(subset["ports"][0]["name"], "http", "{endpoints}");
        assert_eq!(subset["ports"][0]["protocol"], "TCP", "{endpoints}");
    }
    let address = subsets
        .iter()
        .flat_map(|s| s["addresses"].as_array().unwrap())
        .find(|a| a["ip"] == ip_a.as_str())
        .unwrap();
    assert_eq!(address["targetRef"]["kind"], "Pod");
    assert_eq!(address["targetRef"]["name"], "a");
    assert_eq!(address["targetRef"]["namespace"], "default");
    assert_eq!(address["targetRef"]["uid"], get(&c, &["pod", "a"])["metadata"]["uid"]);
    assert!(
        address["nodeName"].as_str().unwrap().starts_with("hollow-"),
        "{address}"
    );
    assert_eq!(
        endpoints["metadata"]["labels"]["tier"], "front",
        "the Service's labels: {endpoints}"
    );
    assert!(
        endpoints["metadata"]["labels"]
            .get("service.kubernetes.io/headless")
            .is_none()
    );
    let trigger = endpoints["metadata"]["annotations"]["endpoints.kubernetes.io/last-change-trigger-time"].as_str();
    assert!(trigger.is_some_and(|t| t.ends_with('Z')), "{endpoints}");

    // The slices: owned by the Service, labelled, one per port set, in zone-a.
    let service_uid = get(&c, &["service", "web"])["metadata"]["uid"].clone();
    eventually("the slices list the three ready pods", REACTION, || {
        let seen: Vec<(String, Value)> = slice_endpoints(&c, "web")
            .into_iter()
            .map(|(name, e)| (name, e["conditions"]["ready"].clone()))
            .collect();
        expect_eq(
            seen,
            vec![
                ("a".into(), Value::Bool(true)),
                ("b".into(), Value::Bool(true)),
                ("c".into(), Value::Bool(true)),
            ],
        )
    });
    let web_slices = slices(&c, "web");
    assert_eq!(web_slices.len(), 2, "{web_slices:?}");
    for slice in &web_slices {
        assert_eq!(slice["addressType"], "IPv4");
        assert_eq!(slice["metadata"]["generateName"], "web-");
        assert_eq!(
            slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
            "endpointslice-controller.k8s.io"
        );
        assert_eq!(slice["metadata"]["labels"]["tier"], "front");
        let owner = &slice["metadata"]["ownerReferences"][0];
        assert_eq!(
            (&owner["kind"], &owner["uid"]),
            (&Value::from("Service"), &service_uid),
            "{slice}"
        );
        assert_eq!(
            (&owner["controller"], &owner["blockOwnerDeletion"]),
            (&Value::Bool(true), &Value::Bool(true))
        );
        let port = &slice["ports"][0];
        assert_eq!(port["name"], "http");
        let numbers: Vec<&Value> = slice["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["targetRef"]["name"])
            .collect();
        let want = if numbers.contains(&&Value::from("c")) {
            9090
        } else {
            8080
        };
        assert_eq!(port["port"], want, "{slice}");
    }
    let (_, endpoint_a) = slice_endpoints(&c, "web").into_iter().find(|(n, _)| n == "a").unwrap();
    assert_eq!(endpoint_a["addresses"], serde_json::json!([ip_a]));
    assert_eq!(endpoint_a["zone"], "zone-a");
    assert!(endpoint_a["nodeName"].as_str().unwrap().starts_with("hollow-"));
    assert_eq!(
        endpoint_a["conditions"],
        serde_json::json!({"ready": true, "serving": true, "terminating": false})
    );

    // Pod a stops being ready: not ready in both.
    c.kubectl_ok(&[
        "patch",
        "pod",
        "a",
        "--subresource=status",
        "-p",
        r#"{"status":{"conditions":[{"type":"Ready","status":"False"}]}}"#,
    ]);
    eventually("pod a is a not-ready address", REACTION, || {
        let endpoints = get(&c, &["endpoints", "web"]);
        // Sorted as endpoint_addresses sorts: IPs come in any order from the pod network.
        let mut want_ready = vec![format!("{ip_b}:8080"), format!("{ip_c}:9090")];
        want_ready.sort();
        expect_eq(
            endpoint_addresses(&endpoints),
            (want_ready, vec![format!("{ip_a}:8080")]),
        )
    });
    eventually("pod a's slice endpoint is neither ready nor serving", REACTION, || {
        let endpoints = slice_endpoints(&c, "web");
        let a = endpoints
            .iter()
            .find(|(n, _)| n == "a")
            .map(|(_, e)| e["conditions"].clone());
        expect_eq(
            a,
            Some(serde_json::json!({"ready": false, "serving": false, "terminating": false})),
        )
    });

    // Pod b goes: from both.
    c.kubectl_ok(&["delete", "pod", "b", "--timeout=30s"]);
    eventually("pod b is gone from the Endpoints", REACTION, || {
        let endpoints = get(&c, &["endpoints", "web"]);
        expect_eq(
            endpoint_addresses(&endpoints),
            (vec![format!("{ip_c}:9090")], vec![format!("{ip_a}:8080")]),
        )
    });
    eventually("pod b is gone from the slices", REACTION, || {
        let names: Vec<String> = slice_endpoints(&c, "web").into_iter().map(|(n, _)| n).collect();
        expect_eq(names, vec!["a".to_string(), "c".to_string()])
    });

    // A new pod joins.
    c.apply(&pod("d", 8080, ""));
    eventually("pod d joins the slices", REACTION, || {
        let names: Vec<String> = slice_endpoints(&c, "web").into_iter().map(|(n, _)| n).collect();
        expect_eq(names, vec!["a".to_string(), "c".to_string(), "d".to_string()])
    });

    // The Service goes: its Endpoints and (through the garbage collector) its slices too.
    c.kubectl_ok(&["delete", "service", "web"]);
    c.kubectl_ok(&["wait", "--for=delete", "endpoints/web", "--timeout=30s"]);
    eventually("the slices are gone", REACTION, || {
        expect_eq(slices(&c, "web").len(), 0)
    });
}

#[test]
fn headless_not_ready_publishing_and_selectorless_services() {
    let (c, _nodes) = cluster_with_nodes(&["--count=1"]);
    c.apply(&pod("named", 8080, "  hostname: named-host\n  subdomain: db\n"));
    c.apply(&pod("plain", 8080, ""));
    c.apply(
        "apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: None
  selector: {app: web}
---
apiVersion: v1
kind: Service
metadata: {name: all}
spec:
  publishNotReadyAddresses: true
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: manual}
spec:
  ports: [{port: 80}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: manual}
subsets: [{addresses: [{ip: 192.0.2.7}], ports: [{port: 80}]}]
",
    );
    let mut ips = Vec::new();
    eventually("both pods run with IPs", POD_START, || {
        ips = ["named", "plain"].iter().map(|p| pod_ip(&c, p)).collect();
        if ips.iter().all(|ip| !ip.is_empty()) {
            Ok(())
        } else {
            Err(format!("{ips:?}"))
        }
    });
    let mut both: Vec<String> = ips.iter().map(|ip| format!("{ip}:-")).collect();
    both.sort();

    // Headless without ports: addresses only, the pod naming the Service as its subdomain
    // with its hostname, and the headless label.
    eventually("the headless Service lists both pods", REACTION, || {
        expect_eq(
            endpoint_addresses(&get(&c, &["endpoints", "db"])),
            (both.clone(), vec![]),
        )
    });
    let db = get(&c, &["endpoints", "db"]);
    assert_eq!(db["metadata"]["labels"]["service.kubernetes.io/headless"], "", "{db}");
    let addresses = db["subsets"][0]["addresses"].as_array().unwrap();
    let hostname_of = |pod: &str| {
        addresses
            .iter()
            .find(|a| a["targetRef"]["name"] == pod)
            .map(|a| a["hostname"].clone())
            .unwrap()
    };
    assert_eq!(hostname_of("named"), "named-host", "{db}");
    assert_eq!(hostname_of("plain"), Value::Null, "{db}");
    eventually("the headless Service's slice lists both pods", REACTION, || {
        expect_eq(slice_endpoints(&c, "db").len(), 2)
    });
    let db_slice = &slices(&c, "db")[0];
    assert_eq!(
        db_slice["metadata"]["labels"]["service.kubernetes.io/headless"], "",
        "{db_slice}"
    );
    let (_, named) = slice_endpoints(&c, "db")
        .into_iter()
        .find(|(n, _)| n == "named")
        .unwrap();
    assert_eq!(named["hostname"], "named-host");

    // publishNotReadyAddresses: a pod that is not ready is still listed as ready.
    let mut on_8080: Vec<String> = ips.iter().map(|ip| format!("{ip}:8080")).collect();
    on_8080.sort();
    eventually("the publishing Service lists both pods", REACTION, || {
        expect_eq(
            endpoint_addresses(&get(&c, &["endpoints", "all"])),
            (on_8080.clone(), vec![]),
        )
    });
    c.kubectl_ok(&[
        "patch",
        "pod",
        "plain",
        "--subresource=status",
        "-p",
        r#"{"status":{"conditions":[{"type":"Ready","status":"False"}]}}"#,
    ]);
    eventually(
        "the not-ready pod is not serving in the publishing Service's slice",
        REACTION,
        || {
            let endpoints = slice_endpoints(&c, "all");
            let plain = endpoints
                .iter()
                .find(|(n, _)| n == "plain")
                .map(|(_, e)| e["conditions"].clone());
            expect_eq(
                plain,
                Some(serde_json::json!({"ready": true, "serving": false, "terminating": false})),
            )
        },
    );
    assert_eq!(
        endpoint_addresses(&get(&c, &["endpoints", "all"])),
        (on_8080.clone(), vec![])
    );
    // The headless Service does not publish not-ready pods: the pod moves over.
    eventually("the headless Service lists the pod as not ready", REACTION, || {
        let (ready, not_ready) = endpoint_addresses(&get(&c, &["endpoints", "db"]));
        expect_eq((ready.len(), not_ready), (1, vec![format!("{}:-", ips[1])]))
    });

    // The selectorless Service's Endpoints are its user's: untouched, and no slices made.
    let manual = get(&c, &["endpoints", "manual"]);
    assert_eq!(
        endpoint_addresses(&manual),
        (vec!["192.0.2.7:80".to_string()], vec![]),
        "{manual}"
    );
    assert!(
        manual["metadata"]["annotations"]
            .get("endpoints.kubernetes.io/last-change-trigger-time")
            .is_none()
    );
    assert!(slices(&c, "manual").is_empty());
}
