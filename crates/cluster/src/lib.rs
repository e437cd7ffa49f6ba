//! Grouping embeddings, shared by the identity service (re-grouping tracklets into identities),
//! the trainer (tracklets clustered into pseudo-identities) and `reid eval`:
//!
//! - [`regroup`]: average-linkage agglomerative clustering under cannot-link constraints;
//! - [`rerank`]: k-reciprocal re-ranking of a distance matrix (Zhong et al., 2017).
//!
//! Pure functions over plain vectors: no model, no store.

pub mod regroup;
pub mod rerank;

pub use regroup::{Tracklet, cosine_similarities, regroup, regroup_by, regroup_from, seen_together};
pub use rerank::{Rerank, rerank, reranked_similarities};

/// How long two time spans `[start, end]` overlap (0 when they do not).
pub fn overlap_ms((a_start, a_end): (i64, i64), (b_start, b_end): (i64, i64)) -> i64 {
    (a_end.min(b_end) - a_start.max(b_start)).max(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_is_the_shared_part_of_two_spans() {
        assert_eq!(overlap_ms((0, 10_000), (4_000, 20_000)), 6_000);
        assert_eq!(overlap_ms((4_000, 20_000), (0, 10_000)), 6_000);
        assert_eq!(overlap_ms((0, 10_000), (2_000, 3_000)), 1_000, "inside");
        assert_eq!(overlap_ms((0, 1_000), (1_000, 2_000)), 0, "touching");
        assert_eq!(overlap_ms((0, 1_000), (5_000, 6_000)), 0, "apart");
    }
}
