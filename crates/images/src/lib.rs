//! Container images without a registry. [`archive`] writes an OCI image archive (an OCI image
//! layout in a tar, what `ctr images import` and `docker load` read) from a root filesystem
//! directory; [`pause`] is the pod sandbox image, whose one file is a static `pause` program
//! built with this crate. Air-gapped nodes and the tests import such archives instead of
//! pulling, as k3s's air-gap images do.

pub mod archive;
pub mod pause;

pub use archive::{ImageConfig, write_archive};
