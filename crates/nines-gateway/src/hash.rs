//! Deterministic hashing for balancing: the same input gives the same hash in
//! every process and across reloads (unlike std's randomly seeded hasher),
//! which IP hash and consistent hashing rely on. Not for untrusted-key tables.

/// 64-bit FNV-1a followed by a strong finalizer (splitmix64).
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(hash)
}

/// The splitmix64 finalizer: spreads every input bit over the output.
pub fn mix(mut value: u64) -> u64 {
    value ^= value >> 30;
    value = value.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    value ^= value >> 27;
    value = value.wrapping_mul(0x94d0_49bb_1331_11eb);
    value ^ (value >> 31)
}

/// Hash of an IP address's bytes.
pub fn hash_ip(ip: std::net::IpAddr) -> u64 {
    match ip {
        std::net::IpAddr::V4(v4) => hash_bytes(&v4.octets()),
        std::net::IpAddr::V6(v6) => hash_bytes(&v6.octets()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_stable_and_spread() {
        assert_eq!(hash_bytes(b"abc"), hash_bytes(b"abc"));
        assert_ne!(hash_bytes(b"abc"), hash_bytes(b"abd"));
        let ones = (0..1000u32)
            .map(|i| (hash_bytes(&i.to_le_bytes()) & 1) as u32)
            .sum::<u32>();
        assert!((400..600).contains(&ones), "{ones}");
    }
}
