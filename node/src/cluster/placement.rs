//! Placement: which members own each partition.
//!
//! The owners of partition `p` are the top-RF members ranked by the rendezvous hash
//! `xxh3_64(p as u32 LE ++ member id)`. The table is a pure function of
//! `(members, partitions, RF)`, so every node computes the same one from the same member
//! list. Rendezvous hashing moves only the partitions a joining or leaving member gains or
//! loses: about P * RF / N of them.

use xxhash_rust::xxh3::Xxh3;

/// Owners per partition, as indexes into the member list, best-ranked first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    owners: Vec<Vec<u16>>,
}

impl Placement {
    /// `replication_factor` is clamped to the member count ("all" is `usize::MAX`).
    pub fn new(member_ids: &[String], partitions: u32, replication_factor: usize) -> Self {
        let rf = replication_factor.min(member_ids.len());
        let owners = (0..partitions)
            .map(|partition| {
                let mut ranked: Vec<(u64, u16)> = member_ids
                    .iter()
                    .enumerate()
                    .map(|(index, id)| (score(partition, id), member_index(index)))
                    .collect();
                // Highest score first; ties (practically impossible) by member id, so the
                // order is total and does not depend on the list's order.
                ranked.sort_unstable_by(|a, b| {
                    b.0.cmp(&a.0).then_with(|| {
                        member_ids[usize::from(a.1)].cmp(&member_ids[usize::from(b.1)])
                    })
                });
                ranked.truncate(rf);
                ranked.into_iter().map(|(_, index)| index).collect()
            })
            .collect();
        Self { owners }
    }

    pub fn owners(&self, partition: u32) -> &[u16] {
        self.owners
            .get(partition as usize)
            .map_or(&[][..], Vec::as_slice)
    }

    /// Partitions that `member` owns.
    pub fn owned_by(&self, member: u16) -> impl Iterator<Item = u32> + '_ {
        self.owners
            .iter()
            .enumerate()
            .filter(move |(_, owners)| owners.contains(&member))
            .map(|(partition, _)| u32::try_from(partition).unwrap_or(u32::MAX))
    }
}

/// The best-ranked member for `partition` among those `eligible` accepts: where a
/// departing owner hands the partition off (the member that would own it next).
pub fn best_ranked<'a>(
    member_ids: impl Iterator<Item = &'a str>,
    partition: u32,
    eligible: impl Fn(&str) -> bool,
) -> Option<&'a str> {
    member_ids.filter(|id| eligible(id)).max_by(|a, b| {
        score(partition, a)
            .cmp(&score(partition, b))
            .then_with(|| b.cmp(a))
    })
}

fn score(partition: u32, member_id: &str) -> u64 {
    let mut hasher = Xxh3::new();
    hasher.update(&partition.to_le_bytes());
    hasher.update(member_id.as_bytes());
    hasher.digest()
}

/// Member lists are validated to hold at most `u16::MAX` members.
#[expect(
    clippy::cast_possible_truncation,
    reason = "member lists hold at most u16::MAX members"
)]
fn member_index(index: usize) -> u16 {
    index as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("kache-{i}")).collect()
    }

    #[test]
    fn every_partition_has_rf_distinct_owners() {
        let placement = Placement::new(&ids(5), 271, 3);
        for p in 0..271 {
            let mut owners = placement.owners(p).to_vec();
            assert_eq!(owners.len(), 3);
            owners.dedup();
            owners.sort_unstable();
            owners.dedup();
            assert_eq!(owners.len(), 3, "partition {p}");
        }
    }

    #[test]
    fn rf_all_and_rf_above_member_count_mean_every_member() {
        let placement = Placement::new(&ids(3), 16, usize::MAX);
        assert!((0..16).all(|p| placement.owners(p).len() == 3));
    }

    #[test]
    fn load_is_balanced() {
        let placement = Placement::new(&ids(4), 271, 1);
        for member in 0..4 {
            let owned = placement.owned_by(member).count();
            assert!((40..=100).contains(&owned), "member {member} owns {owned}");
        }
    }

    #[test]
    fn adding_a_member_only_moves_partitions_to_it() {
        let before = Placement::new(&ids(3), 271, 1);
        let after = Placement::new(&ids(4), 271, 1);
        let mut moved = 0;
        for p in 0..271 {
            if before.owners(p) != after.owners(p) {
                assert_eq!(
                    after.owners(p),
                    &[3],
                    "partition {p} moved to the new member only"
                );
                moved += 1;
            }
        }
        assert!(
            (40..=100).contains(&moved),
            "{moved} partitions moved (about 271/4)"
        );
    }

    #[test]
    fn the_best_ranked_member_is_the_next_owner() {
        let members = ids(4);
        let placement = Placement::new(&members, 64, 1);
        let two_copies = Placement::new(&members, 64, 2);
        for p in 0..64 {
            let owner = &members[usize::from(placement.owners(p)[0])];
            let best = best_ranked(members.iter().map(String::as_str), p, |_| true);
            assert_eq!(best, Some(owner.as_str()), "partition {p}");
            // Without the owner, the hand-off goes where RF=2 puts the second copy.
            let second = &members[usize::from(two_copies.owners(p)[1])];
            let next = best_ranked(members.iter().map(String::as_str), p, |id| id != owner);
            assert_eq!(next, Some(second.as_str()), "partition {p}");
        }
    }

    #[test]
    fn placement_depends_on_ids_not_list_order() {
        let forward = Placement::new(&ids(3), 64, 2);
        let mut reversed_ids = ids(3);
        reversed_ids.reverse();
        let reversed = Placement::new(&reversed_ids, 64, 2);
        for p in 0..64 {
            let by_id = |placement: &Placement, list: &[String]| -> Vec<String> {
                placement
                    .owners(p)
                    .iter()
                    .map(|&i| list[usize::from(i)].clone())
                    .collect()
            };
            assert_eq!(by_id(&forward, &ids(3)), by_id(&reversed, &reversed_ids));
        }
    }
}
