//! The token table: every user `--auth-dir` names, with the SHA-256 digest of its token
//! and its role, and the constant-time lookup of a presented token.
//!
//! Layout, as the operator mounts Kubernetes Secrets: `<dir>/<role>/<secret>/<key>`. The
//! role is `read`, `readwrite` or `admin`; each file under a secret is one user, named
//! `<key>`, whose token is the file's content with surrounding whitespace trimmed. Names
//! starting with `..` are skipped at every level: a Secret volume keeps its data in a
//! `..2024_…` directory behind a `..data` symlink and swaps that symlink to update, while
//! the top-level names (`<key>` → `..data/<key>`) stay, so reading through them sees either
//! the old or the new content of each file. Empty tokens are skipped (a user nobody can
//! log in as), with a note.
//!
//! Only digests are kept: a token is hashed when read and when presented, and never
//! stored, logged or returned. Comparing digests of fixed length against every entry,
//! with no early exit, takes the same time whether and wherever a token matches.

use std::path::Path;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use super::Role;

/// SHA-256 of a token.
pub type Digest = [u8; 32];

pub fn digest(token: &[u8]) -> Digest {
    Sha256::digest(token).into()
}

/// One user: who, with which role, and the digest of its token.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    pub user: Arc<str>,
    pub role: Role,
    /// The Secret the user's file came from, for log lines.
    pub secret: Arc<str>,
    digest: Digest,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The digest stays out of Debug output: a digest of a guessable token can be
        // brute-forced offline.
        f.debug_struct("Entry")
            .field("user", &self.user)
            .field("role", &self.role)
            .field("secret", &self.secret)
            .finish_non_exhaustive()
    }
}

/// The users of one read of `--auth-dir`, sorted by role then user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenTable {
    entries: Vec<Entry>,
}

/// A read of the directory: the table, and what was skipped (for the log; no token).
#[derive(Debug)]
pub struct Loaded {
    pub table: TokenTable,
    pub notes: Vec<String>,
}

impl TokenTable {
    /// Reads `dir`. Any I/O error fails the whole read, so a half-read directory never
    /// replaces a whole table; layout mistakes (an unknown role, a stray file, an empty
    /// token) are skipped and noted.
    pub fn read(dir: &Path) -> std::io::Result<Loaded> {
        let mut entries = Vec::new();
        let mut notes = Vec::new();
        for (role_name, role_path) in listing(dir)? {
            let Some(role) = Role::from_dir(&role_name) else {
                notes.push(format!(
                    "{}: not a role (read, readwrite or admin); ignored",
                    role_path.display()
                ));
                continue;
            };
            if !std::fs::metadata(&role_path)?.is_dir() {
                notes.push(format!("{}: not a directory; ignored", role_path.display()));
                continue;
            }
            for (secret, secret_path) in listing(&role_path)? {
                if !std::fs::metadata(&secret_path)?.is_dir() {
                    notes.push(format!(
                        "{}: a file directly under a role is ignored; the layout is \
                         <role>/<secret>/<user>",
                        secret_path.display()
                    ));
                    continue;
                }
                let secret: Arc<str> = secret.into();
                for (user, user_path) in listing(&secret_path)? {
                    if !std::fs::metadata(&user_path)?.is_file() {
                        continue;
                    }
                    let content = std::fs::read(&user_path)?;
                    let token = content.trim_ascii();
                    if token.is_empty() {
                        notes.push(format!(
                            "{}: empty token; user '{user}' ignored",
                            user_path.display()
                        ));
                        continue;
                    }
                    entries.push(Entry {
                        user: user.into(),
                        role,
                        secret: secret.clone(),
                        digest: digest(token),
                    });
                }
            }
        }
        // Sorted by role, so that of several entries with the same token the last
        // match, the one `lookup` keeps, has the highest role.
        entries.sort_by(|a, b| (a.role, &a.user, &a.secret).cmp(&(b.role, &b.user, &b.secret)));
        Ok(Loaded {
            table: Self { entries },
            notes,
        })
    }

    /// The entry whose token has digest `presented`, and whose user is `user` when one
    /// is given. Every entry is compared, in constant time, whatever matches: the time
    /// taken says how many entries there are, nothing about the token. User names are
    /// not secret and are compared plainly.
    pub fn lookup(&self, user: Option<&[u8]>, presented: &Digest) -> Option<&Entry> {
        self.lookup_with(user, presented, |stored, presented| stored.ct_eq(presented))
    }

    /// [`TokenTable::lookup`] with the digest comparison given: the tests count calls.
    fn lookup_with(
        &self,
        user: Option<&[u8]>,
        presented: &Digest,
        mut equal: impl FnMut(&Digest, &Digest) -> Choice,
    ) -> Option<&Entry> {
        let mut found = Choice::from(0);
        let mut at = 0u64;
        for (index, entry) in (0u64..).zip(&self.entries) {
            let named = user.is_none_or(|user| user == entry.user.as_bytes());
            let hit = equal(&entry.digest, presented) & Choice::from(u8::from(named));
            at.conditional_assign(&index, hit);
            found |= hit;
        }
        if bool::from(found) {
            self.entries.get(usize::try_from(at).ok()?)
        } else {
            None
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Users by role: `(read, readwrite, admin)`.
    pub fn counts(&self) -> (usize, usize, usize) {
        let count = |role| self.entries.iter().filter(|e| e.role == role).count();
        (
            count(Role::Read),
            count(Role::ReadWrite),
            count(Role::Admin),
        )
    }
}

/// The names in `dir` and their paths, without those starting with `..`, sorted.
fn listing(dir: &Path) -> std::io::Result<Vec<(String, std::path::PathBuf)>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("..") {
            continue;
        }
        names.push((name, entry.path()));
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn write(dir: &Path, path: &str, content: &str) {
        let path = dir.join(path);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, content).expect("write");
    }

    fn lookup<'a>(table: &'a TokenTable, user: Option<&str>, token: &str) -> Option<&'a Entry> {
        table.lookup(user.map(str::as_bytes), &digest(token.as_bytes()))
    }

    #[test]
    fn each_file_under_role_and_secret_is_a_user_with_its_trimmed_content_as_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "read/app-readers/alice", "  alice-token\n");
        write(dir.path(), "readwrite/app-writers/bob", "bob-token");
        write(dir.path(), "admin/cache-auth/admin", "root-token\r\n");
        let loaded = TokenTable::read(dir.path()).expect("read");
        assert!(loaded.notes.is_empty(), "{:?}", loaded.notes);
        let table = loaded.table;
        assert_eq!(table.counts(), (1, 1, 1));

        let alice = lookup(&table, None, "alice-token").expect("alice");
        assert_eq!((&*alice.user, alice.role), ("alice", Role::Read));
        assert_eq!(&*alice.secret, "app-readers");
        let bob = lookup(&table, Some("bob"), "bob-token").expect("bob");
        assert_eq!(bob.role, Role::ReadWrite);
        assert_eq!(
            lookup(&table, None, "root-token").map(|e| e.role),
            Some(Role::Admin)
        );

        // The whitespace is not part of the token; a prefix or another user's is not it.
        assert!(lookup(&table, None, "  alice-token\n").is_none());
        assert!(lookup(&table, None, "alice-toke").is_none());
        assert!(lookup(&table, Some("alice"), "bob-token").is_none());
        assert!(lookup(&table, Some("nobody"), "alice-token").is_none());
    }

    #[test]
    fn kubernetes_secret_volume_internals_are_skipped_and_read_through_the_top_level_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("readwrite/app");
        // What the kubelet writes: the data in a timestamped dir, `..data` pointing at
        // it, and each key a symlink through `..data`.
        write(&secret, "..2025_01_01_00_00_00.1/writer", "new-token");
        std::os::unix::fs::symlink("..2025_01_01_00_00_00.1", secret.join("..data"))
            .expect("symlink");
        std::os::unix::fs::symlink("..data/writer", secret.join("writer")).expect("symlink");
        write(dir.path(), "..data/admin/x/intruder", "hidden");
        let loaded = TokenTable::read(dir.path()).expect("read");
        assert!(loaded.notes.is_empty(), "{:?}", loaded.notes);
        assert_eq!(loaded.table.len(), 1, "{:?}", loaded.table);
        let writer = lookup(&loaded.table, None, "new-token").expect("writer");
        assert_eq!((&*writer.user, writer.role), ("writer", Role::ReadWrite));
        assert!(lookup(&loaded.table, None, "hidden").is_none());
    }

    #[test]
    fn empty_tokens_unknown_roles_and_stray_files_are_skipped_with_a_note_naming_no_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "read/s/blank", " \n\t");
        write(dir.path(), "read/s/ok", "fine-token");
        write(dir.path(), "superuser/s/eve", "eve-token");
        write(dir.path(), "admin/stray", "stray-token");
        let loaded = TokenTable::read(dir.path()).expect("read");
        assert_eq!(loaded.table.len(), 1);
        assert!(lookup(&loaded.table, None, "fine-token").is_some());
        assert!(lookup(&loaded.table, None, "").is_none());
        assert!(lookup(&loaded.table, None, "eve-token").is_none());
        assert!(lookup(&loaded.table, None, "stray-token").is_none());
        assert_eq!(loaded.notes.len(), 3, "{:?}", loaded.notes);
        let notes = loaded.notes.join("\n");
        assert!(
            notes.contains("blank") && notes.contains("superuser"),
            "{notes}"
        );
        assert!(
            !notes.contains("token\n") && !notes.contains("-token"),
            "{notes}"
        );
    }

    #[test]
    fn a_token_listed_under_two_roles_gets_the_higher() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "admin/a/ops", "shared");
        write(dir.path(), "read/r/viewer", "shared");
        let table = TokenTable::read(dir.path()).expect("read").table;
        assert_eq!(
            lookup(&table, None, "shared").map(|e| e.role),
            Some(Role::Admin)
        );
        assert_eq!(
            lookup(&table, Some("viewer"), "shared").map(|e| e.role),
            Some(Role::Read)
        );
    }

    #[test]
    fn every_entry_is_compared_whether_the_first_matches_or_none_does() {
        let dir = tempfile::tempdir().expect("tempdir");
        for user in ["a", "b", "c", "d"] {
            write(
                dir.path(),
                &format!("read/s/{user}"),
                &format!("token-{user}"),
            );
        }
        let table = TokenTable::read(dir.path()).expect("read").table;
        for token in ["token-a", "token-d", "wrong"] {
            let mut compared = 0;
            let found = table.lookup_with(None, &digest(token.as_bytes()), |stored, presented| {
                compared += 1;
                stored.ct_eq(presented)
            });
            assert_eq!(found.is_some(), token != "wrong", "{token}");
            assert_eq!(compared, 4, "{token}: no early exit");
        }
    }

    #[test]
    fn a_missing_directory_is_an_error_not_an_empty_table() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(TokenTable::read(&dir.path().join("absent")).is_err());
    }

    #[test]
    fn the_debug_output_holds_no_digest() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "read/s/u", "t");
        let table = TokenTable::read(dir.path()).expect("read").table;
        let shown = format!("{table:?}");
        let hex: String = digest(b"t").iter().map(|b| format!("{b}")).collect();
        assert!(
            !shown.contains("digest") && !shown.contains(&hex),
            "{shown}"
        );
    }
}
