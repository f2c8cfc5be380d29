//! The kind table: every resource the API serves, written once. Routes, discovery (legacy and
//! aggregated), storage keys and, later, OpenAPI and printers are all derived from it.

/// What a subresource is and which verbs it takes.
#[derive(Debug)]
pub struct Subresource {
    pub name: &'static str,
    /// (group, version, kind) of the object the subresource takes and returns.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub verbs: &'static [&'static str],
}

/// One resource in one group-version.
#[derive(Debug)]
pub struct Kind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// Lower-case plural: the URL segment.
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// The segment after `/registry/` in storage keys. Usually the plural; Kubernetes keeps a
    /// few historical names (`minions` for nodes, `services/specs`, ...), and so do we, so that
    /// etcd tooling sees the same layout.
    pub storage: &'static str,
    pub subresources: &'static [Subresource],
    /// The verbs the resource takes (all of [`VERBS`] for a stored kind).
    pub verbs: &'static [&'static str],
}

pub const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const STATUS_VERBS: &[&str] = &["get", "patch", "update"];

const fn status(group: &'static str, version: &'static str, kind: &'static str) -> Subresource {
    Subresource {
        name: "status",
        group,
        version,
        kind,
        verbs: STATUS_VERBS,
    }
}

const fn scale() -> Subresource {
    Subresource {
        name: "scale",
        group: "autoscaling",
        version: "v1",
        kind: "Scale",
        verbs: STATUS_VERBS,
    }
}

/// A resource with the common defaults: storage under its plural, no subresources.
const fn kind(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    namespaced: bool,
) -> Kind {
    Kind {
        group,
        version,
        kind,
        plural,
        singular,
        namespaced,
        short_names: &[],
        categories: &[],
        storage: plural,
        subresources: &[],
        verbs: VERBS,
    }
}

impl Kind {
    const fn short(mut self, names: &'static [&'static str]) -> Kind {
        self.short_names = names;
        self
    }
    const fn all(mut self) -> Kind {
        self.categories = &["all"];
        self
    }
    const fn stored_as(mut self, storage: &'static str) -> Kind {
        self.storage = storage;
        self
    }
    const fn subresources(mut self, subresources: &'static [Subresource]) -> Kind {
        self.subresources = subresources;
        self
    }
    const fn verbs(mut self, verbs: &'static [&'static str]) -> Kind {
        self.verbs = verbs;
        self
    }
    /// A review: create only, answered from the request and never stored.
    const fn review(mut self) -> Kind {
        self.verbs = &["create"];
        self
    }

    /// Whether objects of this kind are answered, not stored (access and identity reviews).
    pub fn is_review(&self) -> bool {
        self.verbs == ["create"]
    }

    pub fn takes(&self, verb: &str) -> bool {
        self.verbs.contains(&verb)
    }

    /// `apps/v1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `deployments.apps`, or `pods` for the core group: how messages name the resource.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Deployment.apps`, or `Pod`: how validation messages name the kind.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// Objects have a spec/status split: status is written through `/status` only, and
    /// `metadata.generation` counts spec changes.
    pub fn has_status(&self) -> bool {
        self.subresource("status").is_some()
    }

    pub fn subresource(&self, name: &str) -> Option<&Subresource> {
        self.subresources.iter().find(|s| s.name == name)
    }
}

/// Every served resource, grouped by group-version; within a group the preferred version comes
/// first.
pub static KINDS: &[Kind] = &[
    // core/v1
    kind("", "v1", "ConfigMap", "configmaps", "configmap", true).short(&["cm"]),
    kind("", "v1", "Endpoints", "endpoints", "endpoints", true)
        .short(&["ep"])
        .stored_as("services/endpoints"),
    kind("", "v1", "Event", "events", "event", true).short(&["ev"]),
    kind("", "v1", "LimitRange", "limitranges", "limitrange", true).short(&["limits"]),
    kind("", "v1", "Namespace", "namespaces", "namespace", false)
        .short(&["ns"])
        .subresources(&[
            status("", "v1", "Namespace"),
            // Only spec.finalizers changes through it: how the namespace controller says the
            // namespace's content is gone.
            Subresource {
                name: "finalize",
                group: "",
                version: "v1",
                kind: "Namespace",
                verbs: &["update"],
            },
        ]),
    kind("", "v1", "Node", "nodes", "node", false)
        .short(&["no"])
        .stored_as("minions")
        .subresources(&[
            status("", "v1", "Node"),
            // Requests passed on to the node's kubelet (`node_proxy`).
            Subresource {
                name: "proxy",
                group: "",
                version: "v1",
                kind: "NodeProxyOptions",
                verbs: &["create", "delete", "get", "patch", "update"],
            },
        ]),
    kind(
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        "persistentvolumeclaim",
        true,
    )
    .short(&["pvc"])
    .subresources(&[status("", "v1", "PersistentVolumeClaim")]),
    kind(
        "",
        "v1",
        "PersistentVolume",
        "persistentvolumes",
        "persistentvolume",
        false,
    )
    .short(&["pv"])
    .subresources(&[status("", "v1", "PersistentVolume")]),
    kind("", "v1", "Pod", "pods", "pod", true)
        .short(&["po"])
        .all()
        .subresources(&[
            status("", "v1", "Pod"),
            Subresource {
                name: "binding",
                group: "",
                version: "v1",
                kind: "Binding",
                verbs: &["create"],
            },
            // Only spec.ephemeralContainers changes, by additions (`strategy`).
            Subresource {
                name: "ephemeralcontainers",
                group: "",
                version: "v1",
                kind: "Pod",
                verbs: STATUS_VERBS,
            },
            // Read from the pod's node (`node_proxy`).
            Subresource {
                name: "log",
                group: "",
                version: "v1",
                kind: "Pod",
                verbs: &["get"],
            },
            // Connections upgraded and proxied to the pod's node (`node_proxy`): GET for
            // WebSocket clients, POST for SPDY ones.
            Subresource {
                name: "attach",
                group: "",
                version: "v1",
                kind: "PodAttachOptions",
                verbs: &["create", "get"],
            },
            Subresource {
                name: "exec",
                group: "",
                version: "v1",
                kind: "PodExecOptions",
                verbs: &["create", "get"],
            },
            Subresource {
                name: "portforward",
                group: "",
                version: "v1",
                kind: "PodPortForwardOptions",
                verbs: &["create", "get"],
            },
        ]),
    kind("", "v1", "PodTemplate", "podtemplates", "podtemplate", true),
    // Computed on each read from the components' health; deprecated upstream, still served.
    kind(
        "",
        "v1",
        "ComponentStatus",
        "componentstatuses",
        "componentstatus",
        false,
    )
    .short(&["cs"])
    .verbs(&["get", "list"]),
    kind(
        "",
        "v1",
        "ReplicationController",
        "replicationcontrollers",
        "replicationcontroller",
        true,
    )
    .short(&["rc"])
    .all()
    .stored_as("controllers")
    .subresources(&[status("", "v1", "ReplicationController"), scale()]),
    kind("", "v1", "ResourceQuota", "resourcequotas", "resourcequota", true)
        .short(&["quota"])
        .subresources(&[status("", "v1", "ResourceQuota")]),
    kind("", "v1", "Secret", "secrets", "secret", true),
    kind("", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount", true)
        .short(&["sa"])
        .subresources(&[Subresource {
            name: "token",
            group: "authentication.k8s.io",
            version: "v1",
            kind: "TokenRequest",
            verbs: &["create"],
        }]),
    kind("", "v1", "Service", "services", "service", true)
        .short(&["svc"])
        .all()
        .stored_as("services/specs")
        .subresources(&[status("", "v1", "Service")]),
    // apps/v1
    kind(
        "apps",
        "v1",
        "ControllerRevision",
        "controllerrevisions",
        "controllerrevision",
        true,
    ),
    kind("apps", "v1", "DaemonSet", "daemonsets", "daemonset", true)
        .short(&["ds"])
        .all()
        .subresources(&[status("apps", "v1", "DaemonSet")]),
    kind("apps", "v1", "Deployment", "deployments", "deployment", true)
        .short(&["deploy"])
        .all()
        .subresources(&[status("apps", "v1", "Deployment"), scale()]),
    kind("apps", "v1", "ReplicaSet", "replicasets", "replicaset", true)
        .short(&["rs"])
        .all()
        .subresources(&[status("apps", "v1", "ReplicaSet"), scale()]),
    kind("apps", "v1", "StatefulSet", "statefulsets", "statefulset", true)
        .short(&["sts"])
        .all()
        .subresources(&[status("apps", "v1", "StatefulSet"), scale()]),
    // batch/v1
    kind("batch", "v1", "CronJob", "cronjobs", "cronjob", true)
        .short(&["cj"])
        .all()
        .subresources(&[status("batch", "v1", "CronJob")]),
    kind("batch", "v1", "Job", "jobs", "job", true)
        .all()
        .subresources(&[status("batch", "v1", "Job")]),
    // authentication.k8s.io/v1 and authorization.k8s.io/v1: reviews, answered and never
    // stored (`kubectl auth whoami`, `kubectl auth can-i`)
    kind(
        "authentication.k8s.io",
        "v1",
        "SelfSubjectReview",
        "selfsubjectreviews",
        "selfsubjectreview",
        false,
    )
    .review(),
    kind(
        "authorization.k8s.io",
        "v1",
        "LocalSubjectAccessReview",
        "localsubjectaccessreviews",
        "localsubjectaccessreview",
        true,
    )
    .review(),
    kind(
        "authorization.k8s.io",
        "v1",
        "SelfSubjectAccessReview",
        "selfsubjectaccessreviews",
        "selfsubjectaccessreview",
        false,
    )
    .review(),
    kind(
        "authorization.k8s.io",
        "v1",
        "SelfSubjectRulesReview",
        "selfsubjectrulesreviews",
        "selfsubjectrulesreview",
        false,
    )
    .review(),
    kind(
        "authorization.k8s.io",
        "v1",
        "SubjectAccessReview",
        "subjectaccessreviews",
        "subjectaccessreview",
        false,
    )
    .review(),
    // autoscaling/v2, the preferred and stored version
    kind(
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        "horizontalpodautoscaler",
        true,
    )
    .short(&["hpa"])
    .all()
    .subresources(&[status("autoscaling", "v2", "HorizontalPodAutoscaler")]),
    // autoscaling/v1: the same objects, stored as v2 (see conversion.rs)
    kind(
        "autoscaling",
        "v1",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        "horizontalpodautoscaler",
        true,
    )
    .short(&["hpa"])
    .all()
    .subresources(&[status("autoscaling", "v1", "HorizontalPodAutoscaler")]),
    // coordination.k8s.io/v1
    kind("coordination.k8s.io", "v1", "Lease", "leases", "lease", true),
    // discovery.k8s.io/v1
    kind(
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        "endpointslice",
        true,
    ),
    // networking.k8s.io/v1
    kind(
        "networking.k8s.io",
        "v1",
        "IngressClass",
        "ingressclasses",
        "ingressclass",
        false,
    ),
    kind("networking.k8s.io", "v1", "Ingress", "ingresses", "ingress", true)
        .short(&["ing"])
        .stored_as("ingress")
        .subresources(&[status("networking.k8s.io", "v1", "Ingress")]),
    kind(
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
        "networkpolicy",
        true,
    )
    .short(&["netpol"]),
    // policy/v1
    kind(
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        "poddisruptionbudget",
        true,
    )
    .short(&["pdb"])
    .subresources(&[status("policy", "v1", "PodDisruptionBudget")]),
    // rbac.authorization.k8s.io/v1
    kind(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        "clusterrolebinding",
        false,
    ),
    kind(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        "clusterrole",
        false,
    ),
    kind(
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        "rolebinding",
        true,
    ),
    kind("rbac.authorization.k8s.io", "v1", "Role", "roles", "role", true),
    // storage.k8s.io/v1
    kind("storage.k8s.io", "v1", "CSIDriver", "csidrivers", "csidriver", false),
    kind("storage.k8s.io", "v1", "CSINode", "csinodes", "csinode", false),
    kind(
        "storage.k8s.io",
        "v1",
        "StorageClass",
        "storageclasses",
        "storageclass",
        false,
    )
    .short(&["sc"]),
    kind(
        "storage.k8s.io",
        "v1",
        "VolumeAttachment",
        "volumeattachments",
        "volumeattachment",
        false,
    )
    .subresources(&[status("storage.k8s.io", "v1", "VolumeAttachment")]),
    // scheduling.k8s.io/v1
    kind(
        "scheduling.k8s.io",
        "v1",
        "PriorityClass",
        "priorityclasses",
        "priorityclass",
        false,
    )
    .short(&["pc"]),
    // events.k8s.io/v1: core Events, stored as v1 (see conversion.rs)
    kind("events.k8s.io", "v1", "Event", "events", "event", true).short(&["ev"]),
    // node.k8s.io/v1
    kind(
        "node.k8s.io",
        "v1",
        "RuntimeClass",
        "runtimeclasses",
        "runtimeclass",
        false,
    ),
];

/// The resource served at `group/version/plural`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Kind> {
    KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.plural == plural)
}

/// The group-versions served, each with its kinds, in table order (groups in order of first
/// appearance; the core group first).
pub fn group_versions() -> Vec<(&'static str, &'static str, Vec<&'static Kind>)> {
    let mut out: Vec<(&str, &str, Vec<&Kind>)> = Vec::new();
    for k in KINDS {
        match out.iter_mut().find(|(g, v, _)| *g == k.group && *v == k.version) {
            Some((_, _, kinds)) => kinds.push(k),
            None => out.push((k.group, k.version, vec![k])),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_consistent() {
        let mut seen = std::collections::HashSet::new();
        for k in KINDS {
            assert!(seen.insert((k.group, k.version, k.plural)), "{} listed twice", k.plural);
            assert_eq!(k.plural, k.plural.to_lowercase());
            assert_eq!(k.singular, k.kind.to_lowercase(), "{}", k.kind);
        }
        // A resource served in several versions or groups (HPAs, events) repeats its short
        // names in each; different resources never share one.
        let mut pairs: Vec<_> = KINDS
            .iter()
            .flat_map(|k| k.short_names.iter().map(move |s| (*s, k.plural)))
            .collect();
        pairs.sort();
        pairs.dedup();
        let short: Vec<_> = pairs.iter().map(|(s, _)| s).collect();
        let unique: std::collections::HashSet<_> = short.iter().collect();
        assert_eq!(short.len(), unique.len(), "short names clash");
    }

    #[test]
    fn category_all_matches_kubernetes() {
        let mut all: Vec<_> = KINDS
            .iter()
            .filter(|k| k.categories.contains(&"all"))
            .map(|k| k.plural)
            .collect();
        all.sort();
        all.dedup();
        assert_eq!(
            all,
            [
                "cronjobs",
                "daemonsets",
                "deployments",
                "horizontalpodautoscalers",
                "jobs",
                "pods",
                "replicasets",
                "replicationcontrollers",
                "services",
                "statefulsets"
            ]
        );
    }
}
