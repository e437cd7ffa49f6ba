//! Grouping embeddings, shared by the identity service (re-grouping tracklets into identities),
//! the trainer (tracklets clustered into pseudo-identities) and `reid eval`:
//!
//! - [`regroup`]: average-linkage agglomerative clustering under cannot-link constraints;
//! - [`rerank`]: k-reciprocal re-ranking of a distance matrix (Zhong et al., 2017);
//! - [`agreement`]: which of a tracklet's crops agree with the rest of it.
//!
//! Pure functions over plain vectors: no model, no store.

pub mod agreement;
pub mod regroup;
pub mod rerank;

pub use agreement::{agreeing, normalise};
pub use regroup::{Tracklet, cosine_similarities, regroup, regroup_by, regroup_from, seen_together};
pub use rerank::{Rerank, rerank, reranked_similarities};

/// The connected components of `n` items that `pairs` join (union-find): a label per item, 0, 1,
/// ... in order of first appearance, so that each component is numbered at its lowest item.
/// Pairs naming an item outside `0..n` are ignored.
pub fn components(n: usize, pairs: impl IntoIterator<Item = (usize, usize)>) -> Vec<usize> {
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut parent: Vec<usize> = (0..n).collect();
    for (a, b) in pairs.into_iter().filter(|&(a, b)| a < n && b < n) {
        let (ra, rb) = (root(&mut parent, a), root(&mut parent, b));
        parent[ra.max(rb)] = ra.min(rb);
    }
    let mut labels = std::collections::HashMap::new();
    (0..n)
        .map(|i| {
            let r = root(&mut parent, i);
            let next = labels.len();
            *labels.entry(r).or_insert(next)
        })
        .collect()
}

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

    #[test]
    fn components_are_numbered_by_first_appearance() {
        // 4-1 and 1-3 chain into one component, first seen at item 1; 9 is not an item.
        assert_eq!(components(6, [(4, 1), (1, 3), (0, 9), (5, 2)]), vec![0, 1, 2, 1, 1, 2]);
        assert_eq!(components(3, []), vec![0, 1, 2]);
        assert!(components(0, [(0, 1)]).is_empty());
    }
}
