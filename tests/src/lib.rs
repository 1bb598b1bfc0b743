//! Local Kubernetes for kache tests.
//!
//! # Layout
//!
//! - [`kubelet`]: the process kubelet. It runs the pods bound to one Node as
//!   local processes, each pod in a network namespace of its own with a real
//!   IP on the `kache0` bridge of `tests/k8s/cluster.sh`. Binary:
//!   `kache-kubelet`.
//! - `src/bin/kache-e2e-app.rs`: a small HTTP program for end-to-end checks
//!   of the kubelet (probes, service-account token, in-cluster API access,
//!   persistence).

pub mod kubelet;
