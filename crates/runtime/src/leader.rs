//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's leaderelection does it,
//! so several replicas of a component can run and only one acts.
//!
//! A candidate reads the Lease and takes it when it is free or its holder has not renewed it
//! for `lease_duration` (measured on this candidate's own clock from when it last saw the
//! record change, so clock skew between machines does not matter). Every write carries the
//! resourceVersion it read: the API server's optimistic concurrency (409) decides races. The
//! leader renews every `retry_period`; if it cannot renew for `renew_deadline` it stops
//! leading by returning an error: the process exits and its supervisor restarts it as a
//! candidate, so two leaders never act at once for longer than the lease allows.

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::time::Instant;

pub struct LeaderElection {
    client: kube::Client,
    namespace: String,
    name: String,
    identity: String,
    /// How long a lease holds without renewal (client-go's default 15 s).
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before giving up (default 10 s).
    pub renew_deadline: Duration,
    /// How often candidates retry and the leader renews (default 2 s).
    pub retry_period: Duration,
}

/// What the candidate last saw of the Lease, and when (on its own clock).
struct Observed {
    spec: Option<LeaseSpec>,
    at: Instant,
}

impl LeaderElection {
    /// A candidate for the Lease `namespace/name`. Its identity is the host name and a random
    /// suffix, as upstream components name themselves.
    pub fn new(client: kube::Client, namespace: &str, name: &str) -> LeaderElection {
        let host = crate::hostname();
        let host = if host.is_empty() { "styrman".to_string() } else { host };
        LeaderElection {
            client,
            namespace: namespace.to_string(),
            name: name.to_string(),
            identity: format!("{host}_{}", uuid::Uuid::new_v4()),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Waits to become the leader, then runs `lead` while renewing the Lease. Returns when
    /// `lead` does, with an error when leadership is lost, and when `shutdown` completes (after
    /// releasing a held Lease, so a successor need not wait for it to expire, as client-go's
    /// ReleaseOnCancel does).
    pub async fn run<F, S>(self, lead: F, shutdown: S) -> anyhow::Result<()>
    where
        F: Future<Output = anyhow::Result<()>>,
        S: Future<Output = ()>,
    {
        tokio::pin!(shutdown);
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut observed = Observed {
            spec: None,
            at: Instant::now(),
        };
        tracing::info!(lease = %format!("{}/{}", self.namespace, self.name), identity = %self.identity, "attempting to acquire the leader lease");
        // An API server still starting (or briefly away) is retried sooner than a lease
        // another candidate holds.
        let mut error_delay = Duration::from_millis(100);
        loop {
            let delay = match self.try_acquire_or_renew(&leases, &mut observed).await {
                Ok(true) => break,
                Ok(false) => self.retry_period,
                Err(e) => {
                    if error_delay >= self.retry_period {
                        tracing::warn!(error = %format!("{e:#}"), "cannot read or write the leader lease");
                    }
                    error_delay = (error_delay * 2).min(self.retry_period);
                    error_delay
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = &mut shutdown => return Ok(()),
            }
        }
        tracing::info!(identity = %self.identity, "became the leader");
        tokio::pin!(lead);
        let mut last_renewal = Instant::now();
        let mut ticks = tokio::time::interval(self.retry_period);
        ticks.tick().await;
        loop {
            tokio::select! {
                done = &mut lead => return done,
                _ = ticks.tick() => {}
                _ = &mut shutdown => {
                    self.release(&leases).await;
                    return Ok(());
                }
            }
            match self.try_acquire_or_renew(&leases, &mut observed).await {
                Ok(true) => last_renewal = Instant::now(),
                // A lost race (409): another candidate can only take the lease after it went
                // unrenewed for lease_duration, longer than renew_deadline, so retrying is safe.
                Ok(false) => tracing::warn!("renewing the leader lease lost a race; retrying"),
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot renew the leader lease"),
            }
            if last_renewal.elapsed() > self.renew_deadline {
                anyhow::bail!(
                    "leader election lost: the lease was not renewed for {:?}",
                    self.renew_deadline
                );
            }
        }
    }

    /// Gives the Lease up if this candidate holds it: no holder, a one-second duration.
    async fn release(&self, leases: &Api<Lease>) {
        let Ok(Some(mut lease)) = leases.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else { return };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        let now = MicroTime(jiff::Timestamp::now());
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now.clone());
        spec.acquire_time = Some(now);
        match leases.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => tracing::info!(identity = %self.identity, "released the leader lease"),
            Err(e) => tracing::warn!(error = %e, "cannot release the leader lease"),
        }
    }

    /// One round of client-go's tryAcquireOrRenew: true when this candidate holds the Lease
    /// afterwards.
    async fn try_acquire_or_renew(&self, leases: &Api<Lease>, observed: &mut Observed) -> anyhow::Result<bool> {
        let now = MicroTime(jiff::Timestamp::now());
        let duration_seconds = i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = leases.get_opt(&self.name).await.context("reading the lease")? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(duration_seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match leases.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e).context("creating the lease"),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if observed.spec.as_ref() != Some(&spec) {
            observed.spec = Some(spec.clone());
            observed.at = Instant::now();
        }
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let ours = holder == self.identity;
        let held_for = spec
            .lease_duration_seconds
            .map(|s| Duration::from_secs(s.max(0) as u64))
            .unwrap_or(self.lease_duration);
        if !holder.is_empty() && !ours && observed.at.elapsed() < held_for {
            return Ok(false);
        }
        let mut next = spec.clone();
        next.holder_identity = Some(self.identity.clone());
        next.lease_duration_seconds = Some(duration_seconds);
        next.renew_time = Some(now.clone());
        if !ours {
            next.acquire_time = Some(now);
            next.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + if holder.is_empty() { 0 } else { 1 });
        }
        lease.spec = Some(next);
        // `replace` sends the resourceVersion we read: a concurrent writer makes this a 409.
        match leases.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(written) => {
                observed.spec = written.spec;
                observed.at = Instant::now();
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e).context("writing the lease"),
        }
    }
}
