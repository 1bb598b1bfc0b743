//! The member file source: a YAML file, re-read every half second. Local clusters and
//! scripts write it (atomically, by renaming a temporary file).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;

use super::{ListRules, MemberList, MembershipError, Publisher};

/// How often a watched member file is re-read.
pub(super) const FILE_POLL: Duration = Duration::from_millis(500);

/// Reads the member file now, then re-reads it every half second and publishes every list
/// with a higher epoch. A file that is unreadable at start is an error; later, an
/// unreadable or invalid file is logged and changes nothing.
pub fn watch_file(
    path: PathBuf,
    rules: ListRules,
) -> Result<(watch::Receiver<MemberList>, tokio::task::JoinHandle<()>), MembershipError> {
    let initial = read_file(&path, &rules)?;
    let (publisher, rx) = Publisher::new(initial, format!("file {}", path.display()));
    let task = tokio::spawn(async move {
        let mut last_text = String::new();
        loop {
            tokio::time::sleep(FILE_POLL).await;
            let text = match tokio::fs::read_to_string(&path).await {
                Ok(text) => text,
                Err(err) => {
                    tracing::warn!(path = %path.display(), error = %err, "cannot read member file");
                    continue;
                }
            };
            if text == last_text {
                continue;
            }
            last_text.clone_from(&text);
            if !publisher.offer(MemberList::parse(&text, &rules)) {
                return;
            }
        }
    });
    Ok((rx, task))
}

fn read_file(path: &Path, rules: &ListRules) -> Result<MemberList, MembershipError> {
    let text = std::fs::read_to_string(path).map_err(|source| MembershipError::Read {
        path: path.to_owned(),
        source,
    })?;
    MemberList::parse(&text, rules)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{LIST, STATIC};
    use super::*;

    #[tokio::test]
    async fn a_watched_file_publishes_only_newer_epochs() {
        let dir = std::env::temp_dir().join(format!("kache-members-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("members.yaml");
        std::fs::write(&path, LIST).expect("write");
        let (mut rx, task) = watch_file(path.clone(), STATIC).expect("initial list");
        assert_eq!(rx.borrow().epoch, 3);

        std::fs::write(&path, LIST.replace("epoch: 3", "epoch: 2")).expect("write");
        std::fs::write(&path, "not: [valid").expect("write");
        tokio::time::sleep(FILE_POLL * 3).await;
        assert_eq!(rx.borrow().epoch, 3, "older and invalid lists are ignored");

        std::fs::write(&path, LIST.replace("epoch: 3", "epoch: 4")).expect("write");
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .expect("a newer list arrives")
            .expect("watch open");
        assert_eq!(rx.borrow().epoch, 4);
        task.abort();
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_missing_file_is_a_startup_error() {
        let missing = std::env::temp_dir().join("kache-no-such-members-file.yaml");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let _guard = runtime.enter();
        assert!(matches!(
            watch_file(missing, STATIC),
            Err(MembershipError::Read { .. })
        ));
    }
}
