//! Consistency levels: how many of a key's owners a request waits for.

use std::str::FromStr;

use serde::Serialize;

/// How many owners a request waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    One,
    Quorum,
    All,
}

impl Consistency {
    /// Answers needed out of `owners`.
    pub fn required(self, owners: usize) -> usize {
        match self {
            Self::One => 1.min(owners),
            Self::Quorum => owners / 2 + 1,
            Self::All => owners,
        }
    }
}

impl FromStr for Consistency {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "one" => Ok(Self::One),
            "quorum" => Ok(Self::Quorum),
            "all" => Ok(Self::All),
            other => Err(format!(
                "unknown consistency '{other}' (expected one, quorum or all)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consistency_levels_count_owners() {
        assert_eq!(Consistency::One.required(3), 1);
        assert_eq!(Consistency::Quorum.required(3), 2);
        assert_eq!(Consistency::Quorum.required(2), 2);
        assert_eq!(Consistency::Quorum.required(1), 1);
        assert_eq!(Consistency::All.required(3), 3);
        assert!("sometimes".parse::<Consistency>().is_err());
        assert_eq!("QUORUM".parse(), Ok(Consistency::Quorum));
    }
}
