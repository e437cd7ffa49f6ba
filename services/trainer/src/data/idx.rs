//! idx files (MNIST, Fashion-MNIST), optionally gzipped: classes as identities.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{ClassSplit, Dataset, GrayImages, MAX_IDX_BYTES, Sample, Source, Split, read_bounded};
use crate::error::TrainError;
use crate::eval::Label;

/// `DIR/NAME` or `DIR/NAME.gz`, whichever exists.
pub(super) fn find_idx(dir: &Path, name: &str) -> Result<PathBuf, TrainError> {
    if !dir.is_dir() {
        return Err(TrainError::Dataset(format!("{} is not a folder", dir.display())));
    }
    [dir.join(name), dir.join(format!("{name}.gz"))]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| TrainError::Dataset(format!("{} has no {name}[.gz]", dir.display())))
}

fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, TrainError> {
    let raw = read_bounded(path, MAX_IDX_BYTES)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .take(MAX_IDX_BYTES + 1)
            .read_to_end(&mut out)
            .map_err(TrainError::io(path))?;
        if out.len() as u64 > MAX_IDX_BYTES {
            return Err(TrainError::Dataset(format!("{} decompresses past {MAX_IDX_BYTES} bytes", path.display())));
        }
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses an idx file: magic (0, 0, type 0x08 = u8, dims), big-endian sizes, then the data.
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<(Vec<usize>, Vec<u8>), TrainError> {
    let bad = |why: &str| TrainError::Dataset(format!("{}: not an idx file ({why})", path.display()));
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 {
        return Err(bad("magic"));
    }
    let dims = bytes[3] as usize;
    let header = 4 + 4 * dims;
    if bytes.len() < header {
        return Err(bad("short header"));
    }
    let shape: Vec<usize> = (0..dims)
        .map(|i| u32::from_be_bytes([bytes[4 + 4 * i], bytes[5 + 4 * i], bytes[6 + 4 * i], bytes[7 + 4 * i]]) as usize)
        .collect();
    let n: usize = shape.iter().product();
    if bytes.len() != header + n {
        return Err(bad(&format!("{} data bytes for shape {shape:?}", bytes.len() - header)));
    }
    Ok((shape, bytes[header..].to_vec()))
}

fn idx_split(images: &Path, labels: &Path, classes: &[i64], per_class: usize) -> Result<Split, TrainError> {
    let (ishape, pixels) = parse_idx(&read_maybe_gz(images)?, images)?;
    let (lshape, label_bytes) = parse_idx(&read_maybe_gz(labels)?, labels)?;
    if ishape.len() != 3 || lshape.len() != 1 || ishape[0] != lshape[0] {
        return Err(TrainError::Dataset(format!("{} and {} do not match", images.display(), labels.display())));
    }
    let mut taken: BTreeMap<i64, usize> = BTreeMap::new();
    let samples = label_bytes
        .iter()
        .enumerate()
        .filter_map(|(i, &class)| {
            let class = i64::from(class);
            if !classes.contains(&class) {
                return None;
            }
            let count = taken.entry(class).or_default();
            if per_class > 0 && *count >= per_class {
                return None;
            }
            *count += 1;
            Some(Sample { source: Source::Memory(i), label: Label { pid: class, camid: 0 } })
        })
        .collect();
    let images = GrayImages { width: ishape[2] as u32, height: ishape[1] as u32, pixels };
    Ok(Split { samples, images: Some(Arc::new(images)) })
}

pub(super) fn idx_dataset(
    train: (&Path, &Path),
    eval: (&Path, &Path),
    classes: &ClassSplit,
) -> Result<Dataset, TrainError> {
    // Evaluation images come from the other file, so shared classes are a closed-set evaluation
    // on unseen images; disjoint classes (the default) are the open-set one re-ID needs.
    let train = idx_split(train.0, train.1, &classes.train_classes, classes.train_per_class)?;
    let eval = idx_split(eval.0, eval.1, &classes.eval_classes, classes.eval_per_class)?;
    Ok(Dataset::leave_one_out(train, eval))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idx_parsing_checks_shape() {
        let mut bytes = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2];
        bytes.extend([1, 2, 3, 4, 5, 6, 7, 8]);
        let (shape, data) = parse_idx(&bytes, Path::new("x")).unwrap();
        assert_eq!(shape, vec![2, 2, 2]);
        assert_eq!(data.len(), 8);
        assert!(parse_idx(&bytes[..20], Path::new("x")).is_err());
        assert!(parse_idx(&[1, 2, 3, 4], Path::new("x")).is_err());
    }
}
