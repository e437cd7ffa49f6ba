//! Times on the wire: `google.protobuf.Timestamp` to and from milliseconds since the Unix epoch,
//! the unit reid's services keep times in (sighting spans, payloads, exports). A clock reading
//! (`SystemTime`) converts with prost's own `Timestamp::from`.

use prost_types::Timestamp;

/// Milliseconds since the epoch (negative before it; sub-millisecond nanos are dropped).
pub fn millis(t: &Timestamp) -> i64 {
    t.seconds.saturating_mul(1000).saturating_add(i64::from(t.nanos) / 1_000_000)
}

/// [`millis`] of an optional field; 0 (the epoch) when it is unset.
pub fn millis_or_zero(t: Option<&Timestamp>) -> i64 {
    t.map_or(0, millis)
}

/// The timestamp of `ms` milliseconds since the epoch.
pub fn timestamp(ms: i64) -> Timestamp {
    Timestamp { seconds: ms.div_euclid(1000), nanos: (ms.rem_euclid(1000) * 1_000_000) as i32 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_round_trip_on_both_sides_of_the_epoch() {
        for ms in [0, 1, 999, 1_000, 1_796_515_200_123, -1, -1_500] {
            assert_eq!(millis(&timestamp(ms)), ms, "{ms}");
        }
        assert_eq!(timestamp(-1_500), Timestamp { seconds: -2, nanos: 500_000_000 });
        assert_eq!(millis_or_zero(None), 0);
        // A clock reading goes through prost's own conversion.
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_234_567);
        assert_eq!(millis(&Timestamp::from(t)), 1_234_567);
    }
}
