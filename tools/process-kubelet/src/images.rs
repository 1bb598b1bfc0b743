//! Image mapping: which host binary stands in for a container image.
//!
//! There is no container runtime, so an "image" is a name the kubelet maps to
//! an executable on this machine (`--image kache/node=/work/.../kache-node`).
//! The mapped binary plays the image's ENTRYPOINT; the image has no CMD. This
//! module owns parsing those mappings and turning a container's
//! `image`/`command`/`args` into the argv that runs, following the Kubernetes
//! rules: `command` replaces the entrypoint, `args` follow it.
//!
//! Everything here is pure; the existence check on the host is passed in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Why a container's image or command cannot be turned into a host program.
/// The pod worker shows it as the container's `Waiting` state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// A `--image` flag is not `NAME=PATH`.
    #[error("image mapping {0:?} is not NAME=PATH")]
    BadMapping(String),
    /// The container has no image.
    #[error("container has no image")]
    NoImage,
    /// No `--image` flag names this image.
    #[error("image {image:?} is not mapped to a host binary (kubelet flag --image {name}=PATH)")]
    Unmapped {
        /// The image as written in the pod.
        image: String,
        /// The name without tag or digest, as the flag must spell it.
        name: String,
    },
    /// `command[0]` is neither an existing absolute path, a mapped name, the
    /// image's own binary, nor a bare name to look up in PATH.
    #[error("command {0:?} does not exist on this host and is not mapped")]
    CommandNotFound(String),
}

/// Image name (without tag or digest) to host executable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageMap {
    entries: BTreeMap<String, PathBuf>,
}

impl ImageMap {
    /// Build a map from `NAME=PATH` strings. A later entry for the same name wins.
    pub fn parse<S: AsRef<str>>(specs: &[S]) -> Result<Self, ImageError> {
        let mut map = ImageMap::default();
        for spec in specs {
            let spec = spec.as_ref();
            let (name, path) = spec
                .split_once('=')
                .filter(|(n, p)| !n.is_empty() && !p.is_empty())
                .ok_or_else(|| ImageError::BadMapping(spec.to_string()))?;
            map.insert(name, path);
        }
        Ok(map)
    }

    /// Map `name` (a tag or digest is ignored) to `path`.
    pub fn insert(&mut self, name: &str, path: impl Into<PathBuf>) {
        self.entries
            .insert(normalize(image_name(name)).to_string(), path.into());
    }

    /// All mappings, for the log.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Path)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_path()))
    }

    /// The host binary for `image`, if mapped. `docker.io/library/x`,
    /// `docker.io/x` and `x` are the same image.
    pub fn lookup(&self, image: &str) -> Option<&Path> {
        self.entries
            .get(normalize(image_name(image)))
            .map(PathBuf::as_path)
    }

    /// The argv a container runs: `command` (if any) replaces the mapped
    /// entrypoint, then `args` follow. `command` and `args` must already have
    /// their `$(VAR)` references expanded.
    ///
    /// `command[0]` is used as-is when it is an existing absolute path or a
    /// bare name (found through PATH when it runs). Otherwise it is resolved
    /// through the map: an exact key, or the image's own binary when the
    /// basename matches it or the image's last path segment, as when a pod
    /// spells out the in-image path (`/usr/local/bin/kache-node`).
    pub fn argv(
        &self,
        image: Option<&str>,
        command: &[String],
        args: &[String],
        exists: impl Fn(&Path) -> bool,
    ) -> Result<Vec<String>, ImageError> {
        let image = image.filter(|i| !i.is_empty()).ok_or(ImageError::NoImage)?;
        let mapped = self.lookup(image).ok_or_else(|| ImageError::Unmapped {
            image: image.to_string(),
            name: image_name(image).to_string(),
        })?;
        let mut argv = match command.split_first() {
            None => vec![mapped.display().to_string()],
            Some((first, rest)) => {
                let mut v = vec![self.resolve_program(image, mapped, first, &exists)?];
                v.extend(rest.iter().cloned());
                v
            }
        };
        argv.extend(args.iter().cloned());
        Ok(argv)
    }

    fn resolve_program(
        &self,
        image: &str,
        mapped: &Path,
        program: &str,
        exists: &impl Fn(&Path) -> bool,
    ) -> Result<String, ImageError> {
        let path = Path::new(program);
        if path.is_absolute() && exists(path) {
            return Ok(program.to_string());
        }
        if let Some(p) = self.entries.get(program) {
            return Ok(p.display().to_string());
        }
        let base = path.file_name().and_then(|b| b.to_str()).unwrap_or(program);
        let image_base = normalize(image_name(image)).rsplit('/').next();
        let mapped_base = mapped.file_name().and_then(|b| b.to_str());
        if Some(base) == mapped_base || Some(base) == image_base {
            return Ok(mapped.display().to_string());
        }
        if !program.contains('/') && !program.is_empty() {
            return Ok(program.to_string());
        }
        Err(ImageError::CommandNotFound(program.to_string()))
    }
}

/// The image reference without its digest (`@sha256:...`) or tag (`:v1`).
/// A registry port (`host:5000/x`) is not a tag.
pub fn image_name(image: &str) -> &str {
    let no_digest = image.split_once('@').map_or(image, |(n, _)| n);
    match no_digest.rfind(':') {
        Some(colon) if !no_digest[colon..].contains('/') => &no_digest[..colon],
        _ => no_digest,
    }
}

/// Docker Hub spellings of the same image collapse to the short one.
fn normalize(name: &str) -> &str {
    name.strip_prefix("docker.io/library/")
        .or_else(|| name.strip_prefix("docker.io/"))
        .unwrap_or(name)
}

#[cfg(test)]
mod tests;
