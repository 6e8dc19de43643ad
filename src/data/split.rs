//! The language-independent split of `docs/data.md`: FNV-1a 64 of a row key,
//! bucket = hash mod 10 (0–7 train, 8 valid, 9 test). No random generator, so
//! any implementation in any language gets the same rows in the same split.

/// FNV-1a, 64 bit (offset basis 0xcbf29ce484222325, prime 0x100000001b3).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The three splits, in the order they are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Split {
    Train,
    Valid,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Valid, Split::Test];

    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Valid => "valid",
            Split::Test => "test",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// Bucket 0–7 → train, 8 → valid, 9 → test.
    pub fn of_bucket(bucket: u64) -> Split {
        match bucket {
            0..=7 => Split::Train,
            8 => Split::Valid,
            _ => Split::Test,
        }
    }

    /// The split of a row from its key (`"{user}:{item}"`, or a Criteo line number).
    pub fn of_key(key: &str) -> Split {
        Split::of_bucket(fnv1a64(key.as_bytes()) % 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_value_of_the_spec() {
        // docs/data.md: key "196:242" → h = 11112527882080221541 → bucket 1 (train).
        let h = fnv1a64(b"196:242");
        assert_eq!(h, 11_112_527_882_080_221_541);
        assert_eq!(h % 10, 1);
        assert_eq!(Split::of_key("196:242"), Split::Train);
    }

    #[test]
    fn fnv_reference_vectors() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn buckets_map_to_splits() {
        let got: Vec<Split> = (0..10).map(Split::of_bucket).collect();
        assert_eq!(&got[..8], &[Split::Train; 8]);
        assert_eq!(got[8], Split::Valid);
        assert_eq!(got[9], Split::Test);
    }
}
