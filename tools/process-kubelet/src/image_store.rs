//! The local image store: OCI image layouts on disk, found by reference and
//! unpacked into a container's root filesystem.
//!
//! The kubelet pulls nothing. `--image-store DIR` names a directory holding OCI
//! image layouts (what `scripts/build-images.sh` writes, or `skopeo copy ...
//! oci:DIR/x:ref`): `DIR` itself, or each of its subdirectories, is a layout
//! with an `index.json`. A manifest in an index is known by its
//! `org.opencontainers.image.ref.name` annotation, which the store reads as a
//! full reference (`kache/node:0.1.0`), Docker Hub spellings folded
//! (`docker.io/library/x` = `x`), no tag meaning `latest`. A pod can also name
//! an image by digest (`kache/node@sha256:...`, the manifest's digest).
//!
//! The store is read again on every lookup, so images built after the kubelet
//! started are found on the next retry (`ImagePullBackOff` clears, as after a
//! push to a registry). [`ImageStore::unpack`] applies the layers in order with
//! the tar crate, honouring whiteouts (`.wh.<name>` deletes, `.wh..wh..opq`
//! empties a directory), and checks every blob against its sha256 digest, so a
//! truncated or edited layout fails loudly instead of running half an image.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use oci_spec::image::{
    ANNOTATION_REF_NAME, Config, Descriptor, Digest, ImageConfiguration, ImageIndex, ImageManifest,
};
use sha2::{Digest as _, Sha256};

/// Why an image cannot be found or unpacked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading the layout or writing the root filesystem failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// An `index.json`, manifest or config is not valid OCI JSON.
    #[error("{path}: {source}")]
    Spec {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        #[source]
        source: oci_spec::OciSpecError,
    },
    /// A blob's content does not match its digest.
    #[error("blob {digest} is corrupt (sha256 {actual})")]
    DigestMismatch {
        /// The digest the manifest names.
        digest: String,
        /// What the content hashes to.
        actual: String,
    },
    /// Something valid this store does not handle (a zstd layer, a nested index).
    #[error("{0}")]
    Unsupported(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A directory of OCI image layouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageStore {
    root: PathBuf,
}

/// One image found in the store: its layout, manifest and config.
#[derive(Debug, Clone)]
pub struct StoredImage {
    /// The layout directory (with `index.json` and `blobs/`).
    pub layout: PathBuf,
    /// The manifest's digest, `sha256:...`.
    pub digest: String,
    /// The layers, in order.
    pub manifest: ImageManifest,
    /// Entrypoint, Cmd, Env, User, WorkingDir.
    pub config: ImageConfiguration,
}

impl StoredImage {
    /// The image's runtime defaults (empty when the config has none).
    pub fn runtime_config(&self) -> Config {
        self.config.config().clone().unwrap_or_default()
    }
}

/// A reference as the store compares it: Docker Hub spellings folded, the
/// tag defaulted to `latest` unless a digest is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `kache/node`, `registry:5000/team/app`.
    pub name: String,
    /// `0.1.0`; `latest` when neither tag nor digest is given.
    pub tag: Option<String>,
    /// `sha256:...`.
    pub digest: Option<String>,
}

impl Reference {
    /// Parse `name[:tag][@digest]`. A registry port (`host:5000/x`) is not a tag.
    pub fn parse(reference: &str) -> Reference {
        let (rest, digest) = match reference.split_once('@') {
            Some((n, d)) => (n, Some(d.to_string())),
            None => (reference, None),
        };
        let (name, tag) = match rest.rfind(':') {
            Some(colon) if !rest[colon..].contains('/') => {
                (&rest[..colon], Some(rest[colon + 1..].to_string()))
            }
            _ => (rest, None),
        };
        let name = name
            .strip_prefix("docker.io/library/")
            .or_else(|| name.strip_prefix("index.docker.io/library/"))
            .or_else(|| name.strip_prefix("docker.io/"))
            .or_else(|| name.strip_prefix("index.docker.io/"))
            .unwrap_or(name);
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_string()),
            _ => tag,
        };
        Reference {
            name: name.to_string(),
            tag,
            digest,
        }
    }

    /// Whether a manifest named `ref_name` with digest `digest` is this image.
    fn matches(&self, ref_name: &str, digest: &str) -> bool {
        let stored = Reference::parse(ref_name);
        if stored.name != self.name {
            return false;
        }
        match &self.digest {
            Some(wanted) => wanted == digest,
            None => stored.tag == self.tag,
        }
    }
}

impl ImageStore {
    /// A store rooted at `root` (which need not exist yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ImageStore { root: root.into() }
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The layouts: the root itself if it is one, else its subdirectories that are.
    fn layouts(&self) -> Result<Vec<PathBuf>, StoreError> {
        if self.root.join("index.json").is_file() {
            return Ok(vec![self.root.clone()]);
        }
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&self.root)(e)),
        };
        let mut layouts: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("index.json").is_file())
            .collect();
        layouts.sort();
        Ok(layouts)
    }

    /// The image `reference` names, or `None` when no layout holds it.
    pub fn find(&self, reference: &str) -> Result<Option<StoredImage>, StoreError> {
        let wanted = Reference::parse(reference);
        for layout in self.layouts()? {
            let index_path = layout.join("index.json");
            let index = ImageIndex::from_file(&index_path).map_err(|source| StoreError::Spec {
                path: index_path.clone(),
                source,
            })?;
            let found = index.manifests().iter().find(|d| {
                ref_name(d).is_some_and(|name| wanted.matches(name, d.digest().as_ref()))
            });
            if let Some(descriptor) = found {
                return load(&layout, descriptor).map(Some);
            }
        }
        Ok(None)
    }

    /// Every reference in the store, for the kubelet's start-up log.
    pub fn references(&self) -> Vec<String> {
        let mut refs = Vec::new();
        for layout in self.layouts().unwrap_or_default() {
            if let Ok(index) = ImageIndex::from_file(layout.join("index.json")) {
                refs.extend(
                    index
                        .manifests()
                        .iter()
                        .filter_map(ref_name)
                        .map(String::from),
                );
            }
        }
        refs
    }

    /// Unpack `image`'s layers, in order, into the empty or missing directory `rootfs`.
    pub fn unpack(image: &StoredImage, rootfs: &Path) -> Result<(), StoreError> {
        fs::create_dir_all(rootfs).map_err(io_err(rootfs))?;
        for layer in image.manifest.layers() {
            let path = blob_path(&image.layout, layer.digest());
            let file = File::open(&path).map_err(io_err(&path))?;
            let mut hashed = HashingReader::new(file);
            apply_layer(&mut hashed, rootfs, &path)?;
            io::copy(&mut hashed, &mut io::sink()).map_err(io_err(&path))?;
            hashed.verify(layer.digest())?;
        }
        Ok(())
    }
}

fn ref_name(descriptor: &Descriptor) -> Option<&str> {
    descriptor
        .annotations()
        .as_ref()
        .and_then(|a: &HashMap<String, String>| a.get(ANNOTATION_REF_NAME))
        .map(String::as_str)
}

/// `<layout>/blobs/<algorithm>/<hex>`.
fn blob_path(layout: &Path, digest: &Digest) -> PathBuf {
    layout
        .join("blobs")
        .join(digest.algorithm().to_string())
        .join(digest.digest())
}

/// Read a small JSON blob (manifest or config), checking its digest.
fn read_blob(layout: &Path, digest: &Digest) -> Result<(PathBuf, Vec<u8>), StoreError> {
    let path = blob_path(layout, digest);
    let bytes = fs::read(&path).map_err(io_err(&path))?;
    let mut hashed = HashingReader::new(bytes.as_slice());
    io::copy(&mut hashed, &mut io::sink()).map_err(io_err(&path))?;
    hashed.verify(digest)?;
    Ok((path, bytes))
}

fn load(layout: &Path, descriptor: &Descriptor) -> Result<StoredImage, StoreError> {
    let (path, bytes) = read_blob(layout, descriptor.digest())?;
    let spec = |path: PathBuf| move |source| StoreError::Spec { path, source };
    let manifest = ImageManifest::from_reader(bytes.as_slice()).map_err(spec(path))?;
    let (config_path, config_bytes) = read_blob(layout, manifest.config().digest())?;
    let config =
        ImageConfiguration::from_reader(config_bytes.as_slice()).map_err(spec(config_path))?;
    Ok(StoredImage {
        layout: layout.to_path_buf(),
        digest: descriptor.digest().to_string(),
        manifest,
        config,
    })
}

/// Apply one layer (plain or gzip tar) on top of `rootfs`.
fn apply_layer(blob: &mut impl Read, rootfs: &Path, blob_path: &Path) -> Result<(), StoreError> {
    let mut reader = BufReader::new(blob);
    let magic = reader.fill_buf().map_err(io_err(blob_path))?;
    let tar: Box<dyn Read + '_> = match magic {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::GzDecoder::new(reader)),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => {
            return Err(StoreError::Unsupported(format!(
                "{}: zstd layers are not supported",
                blob_path.display()
            )));
        }
        _ => Box::new(reader),
    };
    let mut archive = tar::Archive::new(tar);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_overwrite(true);
    for entry in archive.entries().map_err(io_err(blob_path))? {
        let mut entry = entry.map_err(io_err(blob_path))?;
        let path = entry.path().map_err(io_err(blob_path))?.into_owned();
        if let Some(whiteout) = Whiteout::of(&path) {
            whiteout.apply(rootfs)?;
            continue;
        }
        // unpack_in refuses paths that leave rootfs (`..`, absolute symlink parents).
        entry
            .unpack_in(rootfs)
            .map_err(io_err(&rootfs.join(&path)))?;
    }
    Ok(())
}

/// A whiteout entry of a layer: what it deletes from the layers below.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Whiteout {
    /// `.wh.<name>`: delete `<dir>/<name>`.
    Delete(PathBuf),
    /// `<dir>/.wh..wh..opq`: delete everything below `<dir>` from lower layers.
    Opaque(PathBuf),
}

impl Whiteout {
    fn of(path: &Path) -> Option<Whiteout> {
        if path.components().any(|c| c == Component::ParentDir) {
            return None;
        }
        let name = path.file_name()?.to_str()?;
        let hidden = name.strip_prefix(".wh.")?;
        let parent: PathBuf = path
            .parent()
            .unwrap_or(Path::new(""))
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        Some(if hidden == ".wh..opq" {
            Whiteout::Opaque(parent)
        } else {
            Whiteout::Delete(parent.join(hidden))
        })
    }

    fn apply(&self, rootfs: &Path) -> Result<(), StoreError> {
        let (Whiteout::Delete(rel) | Whiteout::Opaque(rel)) = self;
        // A symlink on the way (an earlier layer's `etc -> /etc`) would aim the
        // deletion at the host.
        let mut dir = rootfs.to_path_buf();
        for component in rel.parent().unwrap_or(Path::new("")).components() {
            dir.push(component);
            if fs::symlink_metadata(&dir).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(StoreError::Unsupported(format!(
                    "whiteout {} lies under a symlink",
                    rel.display()
                )));
            }
        }
        match self {
            Whiteout::Delete(rel) => remove_path(&rootfs.join(rel)),
            Whiteout::Opaque(rel) => {
                let dir = rootfs.join(rel);
                if fs::symlink_metadata(&dir).is_ok_and(|m| m.file_type().is_symlink()) {
                    return Ok(());
                }
                let Ok(entries) = fs::read_dir(&dir) else {
                    return Ok(());
                };
                for entry in entries.flatten() {
                    remove_path(&entry.path())?;
                }
                Ok(())
            }
        }
    }
}

/// Remove a file, symlink or directory tree; a missing path is fine.
fn remove_path(path: &Path) -> Result<(), StoreError> {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    result.map_err(io_err(path))
}

/// Hashes what is read through it, to check a blob against its digest.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// Compare what was read with `digest`; digests other than sha256 are not checked.
    fn verify(self, digest: &Digest) -> Result<(), StoreError> {
        if digest.algorithm().to_string() != "sha256" {
            return Ok(());
        }
        let actual: String = self
            .hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if actual == digest.digest() {
            Ok(())
        } else {
            Err(StoreError::DigestMismatch {
                digest: digest.to_string(),
                actual,
            })
        }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
