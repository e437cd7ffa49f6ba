//! Market-1501 (and DukeMTMC-reID, which names its files the same way).

use std::collections::BTreeMap;
use std::path::Path;

use super::{Dataset, Sample, Source, Split, is_image, sorted_entries};
use crate::error::TrainError;
use crate::eval::Label;

/// `0002_c1s1_000451_03.jpg` -> (2, 1); `-1_c3s2_...` -> (-1, 3).
pub fn market_name(path: &Path) -> Option<(i64, i64)> {
    let stem = path.file_stem()?.to_str()?;
    let (pid, rest) = stem.split_once('_')?;
    let cam = rest.strip_prefix('c')?;
    let digits: String = cam.chars().take_while(char::is_ascii_digit).collect();
    Some((pid.parse().ok()?, digits.parse().ok()?))
}

fn market_split(dir: &Path, relabel: bool) -> Result<Split, TrainError> {
    let mut samples = Vec::new();
    let mut ids: BTreeMap<i64, i64> = BTreeMap::new();
    for path in sorted_entries(dir)?.into_iter().filter(|p| is_image(p)) {
        let Some((pid, camid)) = market_name(&path) else {
            return Err(TrainError::Dataset(format!(
                "{} is not a Market-1501 file name (PPPP_cCsS_FFFFFF_BB.jpg)",
                path.display()
            )));
        };
        if relabel && pid < 0 {
            continue; // junk never trains
        }
        let next = ids.len() as i64;
        let pid = if relabel { *ids.entry(pid).or_insert(next) } else { pid };
        samples.push(Sample { source: Source::File(path), label: Label { pid, camid } });
    }
    Ok(Split { samples, images: None })
}

pub(super) fn market1501(root: &Path) -> Result<Dataset, TrainError> {
    Ok(Dataset {
        train: market_split(&root.join("bounding_box_train"), true)?,
        query: market_split(&root.join("query"), false)?,
        gallery: market_split(&root.join("bounding_box_test"), false)?,
        protocol: crate::eval::Protocol::ReId,
        hard_negatives: Vec::new(),
        spans: Vec::new(),
        links: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::data::DatasetConfig;
    use crate::eval::Label;
    use reid_model::{InputSpec, Normalization};

    #[test]
    fn parses_market_names() {
        assert_eq!(market_name(Path::new("0002_c1s1_000451_03.jpg")), Some((2, 1)));
        assert_eq!(market_name(Path::new("-1_c3s2_000100_01.jpg")), Some((-1, 3)));
        assert_eq!(market_name(Path::new("1501_c6s4_001877_02.jpg")), Some((1501, 6)));
        assert_eq!(market_name(Path::new("holiday.jpg")), None);
    }

    #[test]
    fn reads_a_market1501_tree() {
        let root = temp("market");
        for name in
            ["0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg", "0007_c1s1_000101_01.jpg", "-1_c1s1_000001_01.jpg"]
        {
            touch_jpeg(&root.join("bounding_box_train").join(name));
        }
        {
            let name = "0009_c1s1_000001_00.jpg";
            touch_jpeg(&root.join("query").join(name));
        }
        for name in ["0009_c2s1_000001_00.jpg", "-1_c2s1_000002_00.jpg", "0000_c3s1_000003_00.jpg"] {
            touch_jpeg(&root.join("bounding_box_test").join(name));
        }
        let d = DatasetConfig::Market1501 { path: root.clone() }.load().unwrap();
        // Junk dropped from training, identities relabelled 0..n.
        assert_eq!(d.train.pids(), vec![0, 0, 1]);
        assert_eq!(d.train.samples[1].label.camid, 2);
        assert_eq!(d.query.labels(), vec![Label { pid: 9, camid: 1 }]);
        assert_eq!(d.gallery.pids(), vec![-1, 0, 9]);
        assert_eq!(d.protocol, crate::eval::Protocol::ReId);
        let spec = InputSpec { width: 4, height: 8, color: reid_model::ColorOrder::Rgb };
        let norm = Normalization::MeanStd { mean: vec![0.0; 3], std: vec![1.0; 3] };
        assert_eq!(d.train.load(&[0, 2], spec, &norm).unwrap().len(), 2 * 3 * 4 * 8);
        std::fs::remove_dir_all(root).unwrap();
    }
}
