//! A scheduling profile: the settings one `schedulerName` schedules with. One scheduler process
//! serves every profile of its configuration (see [`crate::config`]); without a configuration
//! file it has one profile with upstream's defaults.

use k8s_openapi::api::core::v1::TopologySpreadConstraint;

/// The score plugins this scheduler has, in upstream's default order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScorePlugin {
    TaintToleration,
    NodeAffinity,
    NodeResourcesFit,
    PodTopologySpread,
    InterPodAffinity,
    NodeResourcesBalancedAllocation,
    ImageLocality,
}

impl ScorePlugin {
    pub const ALL: [ScorePlugin; 7] = [
        ScorePlugin::TaintToleration,
        ScorePlugin::NodeAffinity,
        ScorePlugin::NodeResourcesFit,
        ScorePlugin::PodTopologySpread,
        ScorePlugin::InterPodAffinity,
        ScorePlugin::NodeResourcesBalancedAllocation,
        ScorePlugin::ImageLocality,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ScorePlugin::TaintToleration => "TaintToleration",
            ScorePlugin::NodeAffinity => "NodeAffinity",
            ScorePlugin::NodeResourcesFit => "NodeResourcesFit",
            ScorePlugin::PodTopologySpread => "PodTopologySpread",
            ScorePlugin::InterPodAffinity => "InterPodAffinity",
            ScorePlugin::NodeResourcesBalancedAllocation => "NodeResourcesBalancedAllocation",
            ScorePlugin::ImageLocality => "ImageLocality",
        }
    }

    pub fn by_name(name: &str) -> Option<ScorePlugin> {
        ScorePlugin::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The weight upstream's default profile gives the plugin.
    fn default_weight(self) -> i64 {
        match self {
            ScorePlugin::TaintToleration => 3,
            ScorePlugin::NodeAffinity | ScorePlugin::PodTopologySpread | ScorePlugin::InterPodAffinity => 2,
            ScorePlugin::NodeResourcesFit
            | ScorePlugin::NodeResourcesBalancedAllocation
            | ScorePlugin::ImageLocality => 1,
        }
    }
}

/// Each score plugin's weight; 0 means disabled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Weights([i64; ScorePlugin::ALL.len()]);

impl Default for Weights {
    fn default() -> Weights {
        Weights(ScorePlugin::ALL.map(ScorePlugin::default_weight))
    }
}

impl Weights {
    pub fn get(&self, plugin: ScorePlugin) -> i64 {
        self.0[plugin as usize]
    }

    pub fn set(&mut self, plugin: ScorePlugin, weight: i64) {
        self.0[plugin as usize] = weight;
    }

    pub fn disable_all(&mut self) {
        self.0 = [0; ScorePlugin::ALL.len()];
    }
}

/// NodeResourcesFit's scoring strategy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Strategy {
    LeastAllocated,
    MostAllocated,
    /// The shape's points as (utilization 0..=100, score 0..=100), the score already scaled
    /// from the file's 0..=10.
    RequestedToCapacityRatio(Vec<(i64, i64)>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FitScoring {
    pub strategy: Strategy,
    /// The resources scored, with their weights.
    pub resources: Vec<(String, i64)>,
}

impl Default for FitScoring {
    fn default() -> FitScoring {
        FitScoring {
            strategy: Strategy::LeastAllocated,
            resources: vec![("cpu".into(), 1), ("memory".into(), 1)],
        }
    }
}

/// PodTopologySpread's constraints for pods that declare none.
#[derive(Clone, Debug, PartialEq)]
pub struct SpreadDefaults {
    pub constraints: Vec<TopologySpreadConstraint>,
    /// `defaultingType: System`: the constraints are upstream's, and nodes missing one of their
    /// topology keys are still scored.
    pub system: bool,
}

impl Default for SpreadDefaults {
    fn default() -> SpreadDefaults {
        SpreadDefaults {
            constraints: system_default_constraints(),
            system: true,
        }
    }
}

/// Upstream's system defaults: at most 3 more matching pods per host and 5 per zone, as a
/// preference only.
pub fn system_default_constraints() -> Vec<TopologySpreadConstraint> {
    [("kubernetes.io/hostname", 3), ("topology.kubernetes.io/zone", 5)]
        .into_iter()
        .map(|(key, skew)| TopologySpreadConstraint {
            topology_key: key.into(),
            max_skew: skew,
            when_unsatisfiable: "ScheduleAnyway".into(),
            ..Default::default()
        })
        .collect()
}

#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    pub scheduler_name: String,
    /// Share of the nodes to find feasible before scoring; None: upstream's adaptive share.
    pub percentage_of_nodes_to_score: Option<u32>,
    pub weights: Weights,
    pub fit: FitScoring,
    pub spread: SpreadDefaults,
    /// What an existing pod's required affinity term adds to the domain of a pod it selects.
    pub hard_pod_affinity_weight: i64,
    /// Skip existing pods' preferred terms when the incoming pod has no preferred terms itself.
    pub ignore_preferred_terms_of_existing_pods: bool,
}

impl Profile {
    pub fn named(scheduler_name: &str) -> Profile {
        Profile {
            scheduler_name: scheduler_name.to_string(),
            percentage_of_nodes_to_score: None,
            weights: Weights::default(),
            fit: FitScoring::default(),
            spread: SpreadDefaults::default(),
            hard_pod_affinity_weight: 1,
            ignore_preferred_terms_of_existing_pods: false,
        }
    }

    /// Whether pods without constraints of their own get default ones (so the scheduler must
    /// know which Services and controllers select each pod).
    pub fn spreads_by_default(&self) -> bool {
        self.weights.get(ScorePlugin::PodTopologySpread) > 0 && !self.spread.constraints.is_empty()
            || self
                .spread
                .constraints
                .iter()
                .any(|c| c.when_unsatisfiable == "DoNotSchedule")
    }
}
