//! Which of a tracklet's crops agree with the rest of it: the identity service leaves the others
//! out of the tracklet's embedding, and the ingester picks its thumbnail among those surely kept.

/// The crops of a tracklet that agree with the rest of it: each one's cosine similarity to the
/// normalised mean of the others is at least `min_agreement`, or it is among the most agreeing
/// half. Fewer than three crops cannot outvote one another: all are kept. Indices, in order. With
/// `f32::INFINITY` for the floor, the crops kept whatever the floor: the most agreeing half.
pub fn agreeing(embeddings: &[Vec<f32>], min_agreement: f32) -> Vec<usize> {
    let all: Vec<usize> = (0..embeddings.len()).collect();
    if embeddings.len() < 3 {
        return all;
    }
    let mut unit = embeddings.to_vec();
    if !unit.iter_mut().all(|e| normalise(e)) {
        return all;
    }
    let dim = unit[0].len();
    let mut sum = vec![0.0f32; dim];
    unit.iter().for_each(|e| sum.iter_mut().zip(e).for_each(|(s, x)| *s += x));
    let agreement: Vec<f32> = unit
        .iter()
        .map(|e| {
            let mut others: Vec<f32> = sum.iter().zip(e).map(|(s, x)| s - x).collect();
            if !normalise(&mut others) {
                return 1.0;
            }
            others.iter().zip(e).map(|(a, b)| a * b).sum()
        })
        .collect();
    let mut ranked = all.clone();
    ranked.sort_by(|&a, &b| agreement[b].total_cmp(&agreement[a]));
    let half = embeddings.len().div_ceil(2);
    let mut kept: Vec<usize> = ranked
        .iter()
        .enumerate()
        .filter(|&(rank, &i)| rank < half || agreement[i] >= min_agreement)
        .map(|(_, &i)| i)
        .collect();
    kept.sort_unstable();
    kept
}

/// L2-normalises in place; false for a vector with no direction (zero, or not finite).
pub fn normalise(v: &mut [f32]) -> bool {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if !norm.is_finite() || norm == 0.0 {
        return false;
    }
    v.iter_mut().for_each(|x| *x /= norm);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agreeing_leaves_out_the_crop_of_someone_else() {
        // Three crops of one person (around x) and one of someone else (y).
        let crops = [vec![1.0, 0.1, 0.0], vec![1.0, -0.1, 0.0], vec![0.0, 1.0, 0.0], vec![1.0, 0.0, 0.1]];
        assert_eq!(agreeing(&crops, 0.5), vec![0, 1, 3]);
        assert_eq!(agreeing(&crops, -1.0), vec![0, 1, 2, 3], "a floor of -1 keeps all");
        // Two crops cannot outvote each other.
        assert_eq!(agreeing(&crops[1..3], 0.9), vec![0, 1]);
        // However strict the floor, the most agreeing half stays.
        assert_eq!(agreeing(&crops, 1.1).len(), 2);
        // Vectors with no direction are not judged.
        assert_eq!(agreeing(&[vec![0.0, 0.0], vec![1.0, 0.0], vec![0.0, 1.0]], 0.9), vec![0, 1, 2]);
    }
}
