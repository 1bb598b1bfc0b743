//! The kubelet's error type.
//!
//! Errors that end up in a pod's status (a missing ConfigMap, an unmapped
//! image) have their own small enums in the modules that produce them, because
//! they become a container's `Waiting` reason rather than a failure of the
//! kubelet. This enum is for everything else: the API, the host commands and
//! the disk.

use std::path::PathBuf;

/// Something the kubelet could not do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request to the Kubernetes API failed.
    #[error("kubernetes API: {0}")]
    Kube(#[source] kube::Error),

    /// The kubeconfig could not be read or used.
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[source] kube::config::KubeconfigError),

    /// In-cluster or default client configuration could not be inferred.
    #[error("client configuration: {0}")]
    InferConfig(#[source] kube::config::InferConfigError),

    /// A flag or a derived setting is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A host command (`ip`, `mount`, ...) failed or could not be started.
    #[error("`{command}` failed: {detail}")]
    Command {
        /// The command line, for the log.
        command: String,
        /// Exit status and stderr, or the spawn error.
        detail: String,
    },

    /// Reading or writing a file or directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The path that was being touched.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },

    /// A pod cannot be set up yet (for example a volume's ConfigMap does not
    /// exist or a PVC is not bound). The pod worker retries.
    #[error("{0}")]
    NotReady(String),
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Kube(e)
    }
}

impl Error {
    /// Attach a path to an I/O error.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }

    /// True when the API answered 404 Not Found.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Kube(e) if is_not_found(e))
    }
}

/// True when a kube error is an API 404.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 404)
}

/// True when a kube error is an API 409 (already exists, or a conflict).
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 409)
}

/// Result with the kubelet's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
