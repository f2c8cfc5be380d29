//! What every component that is a client of the API server shares: a kube client made from a
//! kubeconfig ([`client`]), client-go style leader election on a Lease ([`leader`]), and the
//! deduplicating, rate-limited work queue controllers feed their reconcile loops from
//! ([`workqueue`]).
//!
//! Components never touch the store: everything goes through the API server, as in Kubernetes.

pub mod client;
pub mod events;
pub mod images;
pub mod labels;
pub mod leader;
pub mod metrics;
pub mod process;
pub mod quantity;
pub mod workqueue;

pub use client::connect;
pub use events::{Recorder, reference_to};
pub use images::canonical_image_name;
pub use leader::LeaderElection;
pub use process::{hostname, shutdown_signal};
pub use workqueue::WorkQueue;
