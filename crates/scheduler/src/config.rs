//! `--config FILE`: a `kubescheduler.config.k8s.io/v1` KubeSchedulerConfiguration, YAML or JSON,
//! decoded strictly (an unknown field is an error, as upstream's strict decoder makes it),
//! defaulted and validated as upstream does, into one [`Profile`] per `profiles[]` entry.
//! Errors name the field's path, as upstream's validation does, and end the process.

use std::collections::HashSet;

use anyhow::Context;
use k8s_openapi::api::core::v1::TopologySpreadConstraint;
use serde::Deserialize;
use serde_json::Value;

use crate::profile::{FitScoring, Profile, ScorePlugin, SpreadDefaults, Strategy, system_default_constraints};

const API_VERSION: &str = "kubescheduler.config.k8s.io/v1";

/// What a configuration file sets beyond the profiles.
#[derive(Debug)]
pub struct FileConfig {
    pub profiles: Vec<Profile>,
    /// `leaderElection.leaderElect`, when set.
    pub leader_elect: Option<bool>,
    /// The Lease to lead on: (namespace, name).
    pub lease: (String, String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
// Fields upstream has and this scheduler does not use are still decoded, so strict decoding
// accepts every valid file.
#[allow(dead_code)]
struct File {
    api_version: Option<String>,
    kind: Option<String>,
    parallelism: Option<i64>,
    leader_election: Option<LeaderElection>,
    client_connection: Option<Value>,
    enable_profiling: Option<bool>,
    enable_contention_profiling: Option<bool>,
    percentage_of_nodes_to_score: Option<i64>,
    pod_initial_backoff_seconds: Option<i64>,
    pod_max_backoff_seconds: Option<i64>,
    profiles: Option<Vec<ProfileFile>>,
    extenders: Option<Vec<Value>>,
    delay_cache_until_active: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
// Fields upstream has and this scheduler does not use are still decoded, so strict decoding
// accepts every valid file.
#[allow(dead_code)]
struct LeaderElection {
    leader_elect: Option<bool>,
    lease_duration: Option<String>,
    renew_deadline: Option<String>,
    retry_period: Option<String>,
    resource_lock: Option<String>,
    resource_name: Option<String>,
    resource_namespace: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ProfileFile {
    scheduler_name: Option<String>,
    percentage_of_nodes_to_score: Option<i64>,
    plugins: Option<Plugins>,
    plugin_config: Option<Vec<PluginConfig>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Plugins {
    pre_enqueue: Option<PluginSet>,
    queue_sort: Option<PluginSet>,
    pre_filter: Option<PluginSet>,
    filter: Option<PluginSet>,
    post_filter: Option<PluginSet>,
    pre_score: Option<PluginSet>,
    score: Option<PluginSet>,
    reserve: Option<PluginSet>,
    permit: Option<PluginSet>,
    pre_bind: Option<PluginSet>,
    bind: Option<PluginSet>,
    post_bind: Option<PluginSet>,
    multi_point: Option<PluginSet>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PluginSet {
    #[serde(default)]
    enabled: Vec<PluginRef>,
    #[serde(default)]
    disabled: Vec<PluginRef>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PluginRef {
    name: String,
    weight: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PluginConfig {
    name: String,
    args: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
// Fields upstream has and this scheduler does not use are still decoded, so strict decoding
// accepts every valid file.
#[allow(dead_code)]
struct FitArgs {
    api_version: Option<String>,
    kind: Option<String>,
    ignored_resources: Option<Vec<String>>,
    ignored_resource_groups: Option<Vec<String>>,
    scoring_strategy: Option<ScoringStrategy>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ScoringStrategy {
    #[serde(rename = "type")]
    type_: Option<String>,
    resources: Option<Vec<ResourceSpec>>,
    requested_to_capacity_ratio: Option<RequestedToCapacityRatio>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ResourceSpec {
    name: String,
    weight: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RequestedToCapacityRatio {
    #[serde(default)]
    shape: Vec<ShapePoint>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ShapePoint {
    utilization: i64,
    score: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
// Fields upstream has and this scheduler does not use are still decoded, so strict decoding
// accepts every valid file.
#[allow(dead_code)]
struct SpreadArgs {
    api_version: Option<String>,
    kind: Option<String>,
    default_constraints: Option<Vec<TopologySpreadConstraint>>,
    defaulting_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
// Fields upstream has and this scheduler does not use are still decoded, so strict decoding
// accepts every valid file.
#[allow(dead_code)]
struct InterPodAffinityArgs {
    api_version: Option<String>,
    kind: Option<String>,
    hard_pod_affinity_weight: Option<i64>,
    ignore_preferred_terms_of_existing_pods: Option<bool>,
}

/// Every in-tree plugin of kube-scheduler 1.33: a name among these is not a typo, even when
/// this scheduler does not score with it.
const KNOWN_PLUGINS: &[&str] = &[
    "PrioritySort",
    "SchedulingGates",
    "NodeUnschedulable",
    "NodeName",
    "TaintToleration",
    "NodeAffinity",
    "NodePorts",
    "NodeResourcesFit",
    "VolumeRestrictions",
    "NodeVolumeLimits",
    "VolumeBinding",
    "VolumeZone",
    "PodTopologySpread",
    "InterPodAffinity",
    "DefaultPreemption",
    "NodeResourcesBalancedAllocation",
    "ImageLocality",
    "DefaultBinder",
    "DynamicResources",
];

/// Reads, decodes and validates the file at `path`.
pub fn load(path: &std::path::Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the scheduler configuration {}", path.display()))?;
    parse(&text).with_context(|| format!("the scheduler configuration {}", path.display()))
}

/// Decodes and validates a configuration (YAML, of which JSON is a subset).
pub fn parse(text: &str) -> anyhow::Result<FileConfig> {
    let value: Value = serde_saphyr::from_str(text).context("not YAML or JSON")?;
    let file: File = serde_json::from_value(value).context("decoding KubeSchedulerConfiguration")?;
    anyhow::ensure!(
        file.api_version.as_deref() == Some(API_VERSION) && file.kind.as_deref() == Some("KubeSchedulerConfiguration"),
        "expected apiVersion {API_VERSION} and kind KubeSchedulerConfiguration, found apiVersion {:?} and kind {:?}",
        file.api_version.unwrap_or_default(),
        file.kind.unwrap_or_default()
    );
    let mut errors = Vec::new();
    if file.extenders.as_ref().is_some_and(|e| !e.is_empty()) {
        errors.push("extenders: Forbidden: scheduler extenders are not supported by styrman".to_string());
    }
    let global = percentage(
        "percentageOfNodesToScore",
        file.percentage_of_nodes_to_score,
        &mut errors,
    );
    let profile_files = file.profiles.unwrap_or_default();
    let mut profiles = Vec::new();
    let mut names = HashSet::new();
    for (i, p) in profile_files.into_iter().enumerate() {
        let path = format!("profiles[{i}]");
        let profile = profile(&path, p, global, &mut errors);
        if !names.insert(profile.scheduler_name.clone()) {
            errors.push(format!(
                "{path}.schedulerName: Duplicate value: {:?}",
                profile.scheduler_name
            ));
        }
        profiles.push(profile);
    }
    if profiles.is_empty() {
        let mut default = Profile::named("default-scheduler");
        default.percentage_of_nodes_to_score = global;
        profiles.push(default);
    }
    if !errors.is_empty() {
        anyhow::bail!("invalid KubeSchedulerConfiguration: [{}]", errors.join(", "));
    }
    let election = file.leader_election;
    let lease_namespace = election
        .as_ref()
        .and_then(|e| e.resource_namespace.clone())
        .filter(|n| !n.is_empty());
    let lease_name = election
        .as_ref()
        .and_then(|e| e.resource_name.clone())
        .filter(|n| !n.is_empty());
    Ok(FileConfig {
        profiles,
        leader_elect: election.as_ref().and_then(|e| e.leader_elect),
        lease: (
            lease_namespace.unwrap_or_else(|| "kube-system".into()),
            lease_name.unwrap_or_else(|| "kube-scheduler".into()),
        ),
    })
}

/// A percentageOfNodesToScore: 0 (or unset) means the adaptive default.
fn percentage(path: &str, value: Option<i64>, errors: &mut Vec<String>) -> Option<u32> {
    match value {
        Some(v) if !(0..=100).contains(&v) => {
            errors.push(format!("{path}: Invalid value: {v}: not in valid range [0-100]"));
            None
        }
        Some(v) => Some(v as u32),
        None => None,
    }
}

fn profile(path: &str, file: ProfileFile, global: Option<u32>, errors: &mut Vec<String>) -> Profile {
    let name = file
        .scheduler_name
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default-scheduler".into());
    let mut profile = Profile::named(&name);
    let own = percentage(
        &format!("{path}.percentageOfNodesToScore"),
        file.percentage_of_nodes_to_score,
        errors,
    );
    profile.percentage_of_nodes_to_score = own.or(global).filter(|p| *p > 0);
    let plugins = file.plugins.unwrap_or_default();
    if let Some(set) = &plugins.multi_point {
        apply_score_set(&format!("{path}.plugins.multiPoint"), set, true, &mut profile, errors);
    }
    if let Some(set) = &plugins.score {
        apply_score_set(&format!("{path}.plugins.score"), set, false, &mut profile, errors);
    }
    let others = [
        ("preEnqueue", &plugins.pre_enqueue),
        ("queueSort", &plugins.queue_sort),
        ("preFilter", &plugins.pre_filter),
        ("filter", &plugins.filter),
        ("postFilter", &plugins.post_filter),
        ("preScore", &plugins.pre_score),
        ("reserve", &plugins.reserve),
        ("permit", &plugins.permit),
        ("preBind", &plugins.pre_bind),
        ("bind", &plugins.bind),
        ("postBind", &plugins.post_bind),
    ];
    for (point, set) in others {
        let Some(set) = set else { continue };
        for (i, p) in set.enabled.iter().chain(&set.disabled).enumerate() {
            if p.name != "*" && !KNOWN_PLUGINS.contains(&p.name.as_str()) {
                errors.push(format!(
                    "{path}.plugins.{point}[{i}]: plugin {:?} does not exist",
                    p.name
                ));
            }
        }
        if !set.enabled.is_empty() || !set.disabled.is_empty() {
            tracing::warn!(profile = %name, point, "only the score plugins are configurable; the {point} settings are ignored");
        }
    }
    for (i, config) in file.plugin_config.unwrap_or_default().into_iter().enumerate() {
        let at = format!("{path}.pluginConfig[{i}].args");
        let args = config.args.unwrap_or(Value::Object(Default::default()));
        match config.name.as_str() {
            "NodeResourcesFit" => match serde_json::from_value::<FitArgs>(args) {
                Ok(args) => fit_args(&at, args, &mut profile, errors),
                Err(e) => errors.push(format!("{at}: {e}")),
            },
            "PodTopologySpread" => match serde_json::from_value::<SpreadArgs>(args) {
                Ok(args) => spread_args(&at, args, &mut profile, errors),
                Err(e) => errors.push(format!("{at}: {e}")),
            },
            "InterPodAffinity" => match serde_json::from_value::<InterPodAffinityArgs>(args) {
                Ok(args) => {
                    let weight = args.hard_pod_affinity_weight.unwrap_or(1);
                    if !(0..=100).contains(&weight) {
                        errors.push(format!(
                            "{at}.hardPodAffinityWeight: Invalid value: {weight}: not in valid range [0-100]"
                        ));
                    }
                    profile.hard_pod_affinity_weight = weight;
                    profile.ignore_preferred_terms_of_existing_pods =
                        args.ignore_preferred_terms_of_existing_pods.unwrap_or(false);
                }
                Err(e) => errors.push(format!("{at}: {e}")),
            },
            other => tracing::warn!(profile = %name, plugin = other, "the arguments of this plugin are ignored"),
        }
    }
    profile
}

/// `plugins.score` (or `multiPoint`): disabled plugins (`*`: all of the defaults) get weight
/// 0, enabled ones their weight (an unset or zero weight is 1, as upstream's framework makes it).
fn apply_score_set(path: &str, set: &PluginSet, multi_point: bool, profile: &mut Profile, errors: &mut Vec<String>) {
    for p in &set.disabled {
        if p.name == "*" {
            profile.weights.disable_all();
        } else if let Some(plugin) = ScorePlugin::by_name(&p.name) {
            profile.weights.set(plugin, 0);
        }
    }
    for (i, p) in set.enabled.iter().enumerate() {
        let at = format!("{path}.enabled[{i}]");
        let weight = p.weight.unwrap_or(0);
        if weight < 0 {
            errors.push(format!(
                "{at}.weight: Invalid value: {weight}: must be a non-negative number"
            ));
            continue;
        }
        match ScorePlugin::by_name(&p.name) {
            Some(plugin) => profile.weights.set(plugin, weight.max(1)),
            // multiPoint lists plugins of every extension point; those without a score are
            // enabled at their other points already.
            None if KNOWN_PLUGINS.contains(&p.name.as_str()) && multi_point => {}
            None if ["VolumeBinding"].contains(&p.name.as_str()) => errors.push(format!(
                "{at}: plugin {:?} is not supported by styrman's scheduler",
                p.name
            )),
            None if KNOWN_PLUGINS.contains(&p.name.as_str()) => {
                errors.push(format!("{at}: plugin {:?} does not extend score plugin", p.name))
            }
            None => errors.push(format!("{at}: plugin {:?} does not exist", p.name)),
        }
    }
}

fn fit_args(path: &str, args: FitArgs, profile: &mut Profile, errors: &mut Vec<String>) {
    if args.ignored_resources.is_some_and(|r| !r.is_empty())
        || args.ignored_resource_groups.is_some_and(|r| !r.is_empty())
    {
        tracing::warn!(profile = %profile.scheduler_name, "NodeResourcesFit: ignoredResources and ignoredResourceGroups are not supported; ignored");
    }
    let Some(strategy) = args.scoring_strategy else {
        profile.fit = FitScoring::default();
        return;
    };
    let at = format!("{path}.scoringStrategy");
    let mut resources: Vec<(String, i64)> = Vec::new();
    for (i, r) in strategy.resources.unwrap_or_default().into_iter().enumerate() {
        let weight = match r.weight {
            None | Some(0) => 1,
            Some(w) => w,
        };
        if !(1..=100).contains(&weight) {
            errors.push(format!("{at}.resources[{i}].weight: Invalid value: {weight}: resource weight of {} not in valid range [1, 100]", r.name));
        }
        if resources.iter().any(|(n, _)| *n == r.name) {
            errors.push(format!("{at}.resources[{i}].name: Duplicate value: {:?}", r.name));
        }
        resources.push((r.name, weight));
    }
    if resources.is_empty() {
        resources = FitScoring::default().resources;
    }
    let kind = strategy.type_.unwrap_or_default();
    let strategy = match kind.as_str() {
        "LeastAllocated" => Strategy::LeastAllocated,
        "MostAllocated" => Strategy::MostAllocated,
        "RequestedToCapacityRatio" => {
            let shape = strategy
                .requested_to_capacity_ratio
                .map(|r| r.shape)
                .unwrap_or_default();
            Strategy::RequestedToCapacityRatio(shape_points(
                &format!("{at}.requestedToCapacityRatio.shape"),
                &shape,
                errors,
            ))
        }
        other => {
            errors.push(format!(
                "{at}.type: Unsupported value: {other:?}: supported values: \"LeastAllocated\", \"MostAllocated\", \"RequestedToCapacityRatio\""
            ));
            Strategy::LeastAllocated
        }
    };
    profile.fit = FitScoring { strategy, resources };
}

/// The shape's points, validated as upstream does (utilization 0..=100 strictly increasing,
/// score 0..=10), with scores scaled to the scheduler's 0..=100.
fn shape_points(path: &str, shape: &[ShapePoint], errors: &mut Vec<String>) -> Vec<(i64, i64)> {
    if shape.is_empty() {
        errors.push(format!("{path}: Required value: at least one point must be specified"));
    }
    for (i, p) in shape.iter().enumerate() {
        if !(0..=100).contains(&p.utilization) {
            errors.push(format!(
                "{path}[{i}].utilization: Invalid value: {}: not in valid range [0, 100]",
                p.utilization
            ));
        } else if i > 0 && p.utilization <= shape[i - 1].utilization {
            errors.push(format!(
                "{path}[{i}].utilization: Invalid value: {}: utilization values must be sorted in increasing order",
                p.utilization
            ));
        }
        if !(0..=10).contains(&p.score) {
            errors.push(format!(
                "{path}[{i}].score: Invalid value: {}: not in valid range [0, 10]",
                p.score
            ));
        }
    }
    // The file's scores are 0..=10 (MaxCustomPriorityScore); nodes are scored 0..=100.
    shape.iter().map(|p| (p.utilization, p.score * 10)).collect()
}

fn spread_args(path: &str, args: SpreadArgs, profile: &mut Profile, errors: &mut Vec<String>) {
    let constraints = args.default_constraints.unwrap_or_default();
    match args.defaulting_type.as_deref().unwrap_or("System") {
        "System" => {
            if !constraints.is_empty() {
                errors.push(format!(
                    "{path}.defaultConstraints: Invalid value: when .defaultingType is \"System\", .defaultConstraints must be empty"
                ));
            }
            profile.spread = SpreadDefaults::default();
            debug_assert_eq!(profile.spread.constraints, system_default_constraints());
        }
        "List" => {
            let mut seen = HashSet::new();
            for (i, c) in constraints.iter().enumerate() {
                let at = format!("{path}.defaultConstraints[{i}]");
                if c.max_skew <= 0 {
                    errors.push(format!(
                        "{at}.maxSkew: Invalid value: {}: must be greater than zero",
                        c.max_skew
                    ));
                }
                if c.topology_key.is_empty() {
                    errors.push(format!("{at}.topologyKey: Required value: can not be empty"));
                }
                if !matches!(c.when_unsatisfiable.as_str(), "DoNotSchedule" | "ScheduleAnyway") {
                    errors.push(format!(
                        "{at}.whenUnsatisfiable: Unsupported value: {:?}: supported values: \"DoNotSchedule\", \"ScheduleAnyway\"",
                        c.when_unsatisfiable
                    ));
                }
                if c.label_selector.is_some() {
                    errors.push(format!("{at}.labelSelector: Forbidden: constraint must not define a selector, as they deduced for each pod"));
                }
                if !seen.insert((c.topology_key.clone(), c.when_unsatisfiable.clone())) {
                    errors.push(format!(
                        "{at}: Duplicate value: {{{:?}, {:?}}}",
                        c.topology_key, c.when_unsatisfiable
                    ));
                }
            }
            profile.spread = SpreadDefaults {
                constraints,
                system: false,
            };
        }
        other => errors.push(format!(
            "{path}.defaultingType: Unsupported value: {other:?}: supported values: \"List\", \"System\""
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> String {
        format!("{:#}", parse(text).unwrap_err())
    }

    #[test]
    fn profiles_with_their_own_plugin_settings() {
        let config = parse(
            r#"
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
percentageOfNodesToScore: 30
leaderElection: {leaderElect: false}
profiles:
- schedulerName: packer
  percentageOfNodesToScore: 70
  plugins:
    score:
      disabled: [{name: NodeResourcesBalancedAllocation}]
      enabled: [{name: NodeResourcesFit, weight: 5}]
  pluginConfig:
  - name: NodeResourcesFit
    args:
      scoringStrategy:
        type: MostAllocated
        resources: [{name: cpu, weight: 2}, {name: memory}]
  - name: InterPodAffinity
    args: {hardPodAffinityWeight: 7}
- schedulerName: ratio
  plugins: {score: {disabled: [{name: "*"}], enabled: [{name: NodeResourcesFit}]}}
  pluginConfig:
  - name: NodeResourcesFit
    args:
      scoringStrategy:
        type: RequestedToCapacityRatio
        requestedToCapacityRatio: {shape: [{utilization: 0, score: 0}, {utilization: 100, score: 10}]}
  - name: PodTopologySpread
    args:
      defaultingType: List
      defaultConstraints: [{maxSkew: 1, topologyKey: zone, whenUnsatisfiable: DoNotSchedule}]
"#,
        )
        .unwrap();
        assert_eq!(config.leader_elect, Some(false));
        assert_eq!(config.lease, ("kube-system".to_string(), "kube-scheduler".to_string()));
        let [packer, ratio] = &config.profiles[..] else {
            panic!("{:?}", config.profiles)
        };
        assert_eq!(packer.scheduler_name, "packer");
        assert_eq!(packer.percentage_of_nodes_to_score, Some(70));
        assert_eq!(packer.weights.get(ScorePlugin::NodeResourcesFit), 5);
        assert_eq!(packer.weights.get(ScorePlugin::NodeResourcesBalancedAllocation), 0);
        assert_eq!(packer.weights.get(ScorePlugin::TaintToleration), 3);
        assert_eq!(packer.fit.strategy, Strategy::MostAllocated);
        assert_eq!(
            packer.fit.resources,
            [("cpu".to_string(), 2), ("memory".to_string(), 1)]
        );
        assert_eq!(packer.hard_pod_affinity_weight, 7);
        assert!(packer.spread.system && packer.spread.constraints.len() == 2);

        assert_eq!(ratio.percentage_of_nodes_to_score, Some(30), "the global share");
        let enabled: Vec<_> = ScorePlugin::ALL
            .into_iter()
            .filter(|p| ratio.weights.get(*p) > 0)
            .collect();
        assert_eq!(enabled, [ScorePlugin::NodeResourcesFit]);
        assert_eq!(
            ratio.fit.strategy,
            Strategy::RequestedToCapacityRatio(vec![(0, 0), (100, 100)])
        );
        assert_eq!(ratio.fit.resources, FitScoring::default().resources);
        assert!(!ratio.spread.system);
        assert_eq!(ratio.spread.constraints[0].when_unsatisfiable, "DoNotSchedule");
    }

    #[test]
    fn json_and_no_profiles_mean_the_default_profile() {
        let config = parse(
            r#"{"apiVersion": "kubescheduler.config.k8s.io/v1", "kind": "KubeSchedulerConfiguration",
            "leaderElection": {"resourceNamespace": "ops", "resourceName": "sched"}}"#,
        )
        .unwrap();
        assert_eq!(config.profiles, [Profile::named("default-scheduler")]);
        assert_eq!(config.lease, ("ops".to_string(), "sched".to_string()));
        assert_eq!(config.leader_elect, None);
    }

    #[test]
    fn bad_configurations_say_what_is_wrong() {
        let head = "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n";
        assert!(error_of("apiVersion: v1\nkind: Pod\n").contains("expected apiVersion kubescheduler.config.k8s.io/v1"));
        assert!(error_of(&format!("{head}profilez: []\n")).contains("unknown field `profilez`"));
        let e = error_of(&format!("{head}percentageOfNodesToScore: 120\n"));
        assert!(
            e.contains("percentageOfNodesToScore: Invalid value: 120: not in valid range [0-100]"),
            "{e}"
        );
        let e = error_of(&format!(
            "{head}profiles: [{{schedulerName: a}}, {{schedulerName: a}}]\n"
        ));
        assert!(e.contains("profiles[1].schedulerName: Duplicate value: \"a\""), "{e}");
        let e = error_of(&format!(
            "{head}profiles: [{{pluginConfig: [{{name: NodeResourcesFit, args: {{scoringStrategy: {{type: Fastest}}}}}}]}}]\n"
        ));
        assert!(
            e.contains("profiles[0].pluginConfig[0].args.scoringStrategy.type: Unsupported value: \"Fastest\""),
            "{e}"
        );
        let e = error_of(&format!(
            "{head}profiles: [{{pluginConfig: [{{name: NodeResourcesFit, args: {{scoringStrategy: {{type: RequestedToCapacityRatio,
              requestedToCapacityRatio: {{shape: [{{utilization: 50, score: 11}}, {{utilization: 40, score: 1}}]}}}}}}}}]}}]\n"
        ));
        assert!(
            e.contains("shape[0].score: Invalid value: 11: not in valid range [0, 10]"),
            "{e}"
        );
        assert!(
            e.contains(
                "shape[1].utilization: Invalid value: 40: utilization values must be sorted in increasing order"
            ),
            "{e}"
        );
        let e = error_of(&format!(
            "{head}profiles: [{{plugins: {{score: {{enabled: [{{name: Magic}}]}}}}}}]\n"
        ));
        assert!(
            e.contains("profiles[0].plugins.score.enabled[0]: plugin \"Magic\" does not exist"),
            "{e}"
        );
        let e = error_of(&format!(
            "{head}profiles: [{{pluginConfig: [{{name: PodTopologySpread, args: {{defaultConstraints: [{{maxSkew: 1, topologyKey: zone, whenUnsatisfiable: ScheduleAnyway}}]}}}}]}}]\n"
        ));
        assert!(
            e.contains("when .defaultingType is \"System\", .defaultConstraints must be empty"),
            "{e}"
        );
        let e = error_of(&format!(
            "{head}profiles: [{{pluginConfig: [{{name: InterPodAffinity, args: {{hardPodAffinityWeight: 101}}}}]}}]\n"
        ));
        assert!(e.contains("hardPodAffinityWeight: Invalid value: 101"), "{e}");
    }
}
