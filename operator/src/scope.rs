//! Which namespaces the operator watches: all of them (one cluster-wide watch per kind,
//! which needs a ClusterRole), or a list (one controller per namespace, each with
//! namespaced watches only, so a Role in each namespace is enough).
//!
//! The list comes from `--watch-namespace` / `KACHE_OPERATOR_WATCH_NAMESPACE` as
//! comma-separated names. It is refused, naming the entry, rather than watched partly:
//! a typo would otherwise leave CacheClusters silently unreconciled.

use std::fmt;

/// The namespaces the operator reconciles CacheClusters in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchScope {
    /// Every namespace, with cluster-wide watches.
    AllNamespaces,
    /// Only these (at least one, distinct, in the order given).
    Namespaces(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error(
        "entry {position} of the namespace list {list:?} is empty (a doubled or trailing comma?)"
    )]
    Empty { position: usize, list: String },
    #[error(
        "{name:?} is not a namespace name: a DNS-1123 label is at most 63 characters of \
         lowercase letters, digits and '-', and starts and ends with a letter or digit"
    )]
    InvalidName { name: String },
}

impl WatchScope {
    /// Parses a comma-separated list of namespaces. Blank (or only spaces) means every
    /// namespace. Each entry is trimmed; a repeated entry is watched once.
    pub fn parse(list: &str) -> Result<Self, ScopeError> {
        if list.trim().is_empty() {
            return Ok(Self::AllNamespaces);
        }
        let mut namespaces: Vec<String> = Vec::new();
        for (index, entry) in list.split(',').enumerate() {
            let name = entry.trim();
            if name.is_empty() {
                return Err(ScopeError::Empty {
                    position: index + 1,
                    list: list.to_owned(),
                });
            }
            if !is_dns1123_label(name) {
                return Err(ScopeError::InvalidName {
                    name: name.to_owned(),
                });
            }
            if !namespaces.iter().any(|known| known == name) {
                namespaces.push(name.to_owned());
            }
        }
        Ok(Self::Namespaces(namespaces))
    }
}

impl fmt::Display for WatchScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AllNamespaces => f.write_str("all namespaces"),
            Self::Namespaces(names) => write!(f, "namespaces {}", names.join(", ")),
        }
    }
}

/// What the API server accepts as a namespace name (RFC 1123 label).
fn is_dns1123_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    let inner = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
    let edge = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(inner)
        && bytes.first().is_some_and(edge)
        && bytes.last().is_some_and(edge)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(names: &[&str]) -> WatchScope {
        WatchScope::Namespaces(names.iter().map(|n| (*n).to_owned()).collect())
    }

    #[test]
    fn blank_means_every_namespace() {
        assert_eq!(WatchScope::parse(""), Ok(WatchScope::AllNamespaces));
        assert_eq!(WatchScope::parse("  "), Ok(WatchScope::AllNamespaces));
    }

    #[test]
    fn one_namespace_is_a_list_of_one() {
        assert_eq!(WatchScope::parse("caches"), Ok(list(&["caches"])));
    }

    #[test]
    fn entries_are_trimmed_and_kept_in_order() {
        assert_eq!(
            WatchScope::parse(" team-b ,team-a,\tcaches "),
            Ok(list(&["team-b", "team-a", "caches"]))
        );
    }

    #[test]
    fn a_repeated_namespace_is_watched_once() {
        assert_eq!(
            WatchScope::parse("a,b, a,b"),
            Ok(list(&["a", "b"])),
            "two controllers on one namespace would reconcile each cluster twice"
        );
    }

    #[test]
    fn an_empty_entry_is_refused_with_its_position() {
        for (text, position) in [("a,,b", 2), ("a,", 2), (",a", 1), ("a, ,b", 2)] {
            assert_eq!(
                WatchScope::parse(text),
                Err(ScopeError::Empty {
                    position,
                    list: text.to_owned()
                }),
                "{text:?}"
            );
        }
    }

    #[test]
    fn names_that_are_not_dns_1123_labels_are_refused() {
        let too_long = "a".repeat(64);
        for bad in [
            "Caches",
            "team_a",
            "-a",
            "a-",
            "a.b",
            "a b",
            "é",
            "*",
            too_long.as_str(),
        ] {
            let text = format!("ok,{bad}");
            assert_eq!(
                WatchScope::parse(&text),
                Err(ScopeError::InvalidName {
                    name: bad.trim().to_owned()
                }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_longest_and_shortest_labels_are_accepted() {
        let longest = "a".repeat(63);
        assert_eq!(
            WatchScope::parse(&format!("0,{longest},a-9")),
            Ok(list(&["0", &longest, "a-9"]))
        );
    }

    #[test]
    fn the_error_names_the_bad_entry() {
        let message = WatchScope::parse("caches,Team_A").unwrap_err().to_string();
        assert!(message.contains("\"Team_A\""), "{message}");
        assert!(message.contains("DNS-1123"), "{message}");
    }
}
