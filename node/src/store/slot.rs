//! Key placement: the Redis Cluster hash slot of a key, and the partition that holds it.
//!
//! `slot = CRC16-XMODEM(key) mod 16384`, where only the hash tag is hashed when the key
//! has one (the bytes between the first `{` and the first `}` after it, if not empty),
//! exactly as Redis Cluster computes it. `partition = slot × P / 16384`, so each partition
//! is one contiguous slot range, and a RESP client's slot map and kache's partitions
//! describe the same placement: the HTTP API and RESP agree on where every key lives.
//!
//! This is protocol (peer protocol v3): every member must compute the same partition for a
//! key, so it never changes within a protocol version.

/// Redis Cluster's slot count.
pub const SLOTS: u16 = 16_384;

/// The hash slot of `key`, honouring `{hash tags}`.
pub fn slot_of(key: &[u8]) -> u16 {
    crc16(hash_tag(key)) % SLOTS
}

/// The partition that holds `slot` when there are `partitions` (at most [`SLOTS`]).
pub fn partition_of_slot(slot: u16, partitions: u32) -> u32 {
    let partition = u64::from(slot) * u64::from(partitions) / u64::from(SLOTS);
    // slot < SLOTS, so partition < partitions.
    u32::try_from(partition).unwrap_or(u32::MAX)
}

/// The slots partition `partition` holds, as a half-open range: `[first, end)`.
pub fn slots_of_partition(partition: u32, partitions: u32) -> std::ops::Range<u16> {
    // The first slot s with s × P / SLOTS >= partition is ceil(partition × SLOTS / P).
    let first = |p: u32| {
        let slots = u64::from(SLOTS);
        let first = (u64::from(p) * slots).div_ceil(u64::from(partitions.max(1)));
        u16::try_from(first.min(slots)).unwrap_or(SLOTS)
    };
    first(partition)..first(partition + 1)
}

/// The part of `key` that is hashed: its hash tag when it has a non-empty one.
fn hash_tag(key: &[u8]) -> &[u8] {
    let Some(open) = key.iter().position(|&b| b == b'{') else {
        return key;
    };
    let rest = &key[open + 1..];
    match rest.iter().position(|&b| b == b'}') {
        Some(close) if close > 0 => &rest[..close],
        _ => key,
    }
}

/// CRC16-XMODEM (polynomial 0x1021, initial value 0), table driven.
fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |crc, &byte| {
        let index = usize::from(((crc >> 8) as u8) ^ byte);
        (crc << 8) ^ CRC16_TABLE[index]
    })
}

const CRC16_TABLE: [u16; 256] = crc16_table();

const fn crc16_table() -> [u16; 256] {
    let mut table = [0u16; 256];
    let mut byte: u16 = 0;
    while byte < 256 {
        let mut crc = byte << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[byte as usize] = crc;
        byte += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis_cluster() {
        // Values from a real Redis (`CLUSTER KEYSLOT`) and the Redis Cluster spec.
        assert_eq!(crc16(b"123456789"), 0x31C3, "the spec's CRC16 check value");
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b"bar"), 5061);
        assert_eq!(slot_of(b"hello"), 866);
        assert_eq!(slot_of(b""), 0);
    }

    #[test]
    fn hash_tags_follow_the_redis_rules() {
        let tagged = slot_of(b"user1000");
        assert_eq!(slot_of(b"{user1000}.following"), tagged);
        assert_eq!(slot_of(b"{user1000}.followers"), tagged);
        // Only the first `{` and the first `}` after it count.
        assert_eq!(slot_of(b"foo{bar}{zap}"), slot_of(b"bar"));
        assert_eq!(slot_of(b"foo{{bar}}zap"), slot_of(b"{bar"));
        // An empty tag or no closing brace: the whole key is hashed.
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{bar"), b"foo{bar");
    }

    #[test]
    fn partitions_are_contiguous_slot_ranges_that_cover_every_slot_once() {
        for partitions in [1, 2, 3, 7, 271, 1000, 16_384] {
            let mut next = 0u16;
            for partition in 0..partitions {
                let range = slots_of_partition(partition, partitions);
                assert_eq!(range.start, next, "P={partitions} p={partition}");
                assert!(
                    !range.is_empty(),
                    "P={partitions} p={partition} holds no slot"
                );
                for slot in range.clone() {
                    assert_eq!(partition_of_slot(slot, partitions), partition);
                }
                next = range.end;
            }
            assert_eq!(next, SLOTS, "P={partitions}");
        }
    }
}
