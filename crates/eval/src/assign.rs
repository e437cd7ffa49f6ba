//! Minimum-cost assignment (the Hungarian method, in the shortest-augmenting-path form of
//! Jonker and Volgenant's analysis), over a rectangular matrix whose missing entries are pairs that
//! may not be matched.

/// The assignment of rows to columns that matches as many allowed pairs as possible and, among
/// those, has the least total cost. `cost[r][c]` is `None` where row `r` may not take column `c`.
/// Returns, for each row, its column.
pub fn assign(cost: &[Vec<Option<f64>>]) -> Vec<Option<usize>> {
    let rows = cost.len();
    let cols = cost.iter().map(Vec::len).max().unwrap_or(0);
    if rows == 0 || cols == 0 {
        return vec![None; rows];
    }
    // Forbidden pairs cost more than any assignment of allowed ones, so that the count of allowed
    // matches comes first (as py-motmetrics does); they are dropped from the answer.
    let worst = cost.iter().flatten().flatten().fold(0.0f64, |m, c| m.max(c.abs())) + 1.0;
    let forbidden = 2.0 * rows.min(cols) as f64 * worst + 1.0;
    let at = |r: usize, c: usize| cost[r].get(c).copied().flatten().unwrap_or(forbidden);

    // The method wants no more rows than columns: solve the transpose otherwise.
    let transpose = rows > cols;
    let (n, m) = if transpose { (cols, rows) } else { (rows, cols) };
    let a = |i: usize, j: usize| if transpose { at(j, i) } else { at(i, j) };

    // 1-based potentials and matching, column 0 a sentinel.
    let mut u = vec![0.0f64; n + 1];
    let mut v = vec![0.0f64; m + 1];
    let mut owner = vec![0usize; m + 1];
    let mut way = vec![0usize; m + 1];
    for i in 1..=n {
        owner[0] = i;
        let mut j0 = 0;
        let mut min_to = vec![f64::INFINITY; m + 1];
        let mut used = vec![false; m + 1];
        loop {
            used[j0] = true;
            let i0 = owner[j0];
            let mut delta = f64::INFINITY;
            let mut j1 = 0;
            for j in 1..=m {
                if used[j] {
                    continue;
                }
                let reduced = a(i0 - 1, j - 1) - u[i0] - v[j];
                if reduced < min_to[j] {
                    min_to[j] = reduced;
                    way[j] = j0;
                }
                if min_to[j] < delta {
                    delta = min_to[j];
                    j1 = j;
                }
            }
            for j in 0..=m {
                if used[j] {
                    u[owner[j]] += delta;
                    v[j] -= delta;
                } else {
                    min_to[j] -= delta;
                }
            }
            j0 = j1;
            if owner[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            owner[j0] = owner[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }

    let mut out = vec![None; rows];
    for (j, &i) in owner.iter().enumerate().skip(1) {
        if i == 0 {
            continue;
        }
        let (r, c) = if transpose { (j - 1, i - 1) } else { (i - 1, j - 1) };
        if cost[r].get(c).copied().flatten().is_some() {
            out[r] = Some(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn total(cost: &[Vec<Option<f64>>], a: &[Option<usize>]) -> f64 {
        a.iter().enumerate().filter_map(|(r, c)| c.and_then(|c| cost[r][c])).sum()
    }

    /// Every assignment of a small matrix, the best by (matches, -cost).
    fn brute(cost: &[Vec<Option<f64>>]) -> (usize, f64) {
        fn go(cost: &[Vec<Option<f64>>], r: usize, used: &mut Vec<bool>, n: usize, c: f64, best: &mut (usize, f64)) {
            if r == cost.len() {
                if n > best.0 || (n == best.0 && c < best.1 - 1e-12) {
                    *best = (n, c);
                }
                return;
            }
            go(cost, r + 1, used, n, c, best);
            for j in 0..used.len() {
                if let (false, Some(x)) = (used[j], cost[r][j]) {
                    used[j] = true;
                    go(cost, r + 1, used, n + 1, c + x, best);
                    used[j] = false;
                }
            }
        }
        let mut best = (0, f64::INFINITY);
        let cols = cost.first().map_or(0, Vec::len);
        go(cost, 0, &mut vec![false; cols], 0, 0.0, &mut best);
        best
    }

    #[test]
    fn the_cheapest_assignment_is_found() {
        let s = |v: &[f64]| v.iter().map(|&x| Some(x)).collect::<Vec<_>>();
        let cost = vec![s(&[4.0, 1.0, 3.0]), s(&[2.0, 0.0, 5.0]), s(&[3.0, 2.0, 2.0])];
        let a = assign(&cost);
        assert_eq!(a, vec![Some(1), Some(0), Some(2)]);
        assert_eq!(total(&cost, &a), 5.0);
    }

    #[test]
    fn more_matches_come_before_a_lower_cost() {
        // Row 0 alone would take column 0 (0.1), but then row 1 could match nothing.
        let cost = vec![vec![Some(0.1), Some(0.9)], vec![Some(0.2), None]];
        assert_eq!(assign(&cost), vec![Some(1), Some(0)]);
    }

    #[test]
    fn random_matrices_agree_with_exhaustive_search() {
        let mut seed = 7u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as f64 / (1u64 << 31) as f64
        };
        for _ in 0..300 {
            let rows = 1 + (next() * 5.0) as usize;
            let cols = 1 + (next() * 5.0) as usize;
            let cost: Vec<Vec<Option<f64>>> = (0..rows)
                .map(|_| {
                    (0..cols).map(|_| if next() < 0.3 { None } else { Some((next() * 10.0).round() / 10.0) }).collect()
                })
                .collect();
            let a = assign(&cost);
            let mut taken = vec![false; cols];
            for c in a.iter().flatten() {
                assert!(!taken[*c], "a column is used once");
                taken[*c] = true;
            }
            let n = a.iter().flatten().count();
            let best = brute(&cost);
            assert_eq!(n, best.0, "{cost:?}");
            assert!((total(&cost, &a) - best.1).abs() < 1e-9, "{cost:?}: {a:?}");
        }
    }
}
