//! Datasets in the layouts users have, all turned into one list of samples (where the image is,
//! whose it is, which camera saw it):
//!
//! - `fashion_mnist` / `mnist` / `idx`: idx files (optionally gzipped), classes as identities;
//! - `folders`: `ROOT/<identity>/*.jpg`, one folder per identity;
//! - `market1501`: `bounding_box_train/`, `query/`, `bounding_box_test/` with Market-1501 file
//!   names `0002_c1s1_000451_03.jpg` (person 2, camera 1; person -1 is junk, 0 a distractor);
//! - `tracklets`: `ROOT/<camera>/<track>/*.jpg` as exported by the ingester, each tracklet one
//!   pseudo-identity seen by one camera (until the trainer clusters them), held out by time.
//!
//! Images are loaded through `reid_model::preprocess`, the function the embedder serves with.

mod folders;
mod idx;
pub mod links;
mod market;
mod tracklets;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use reid_model::preprocess::{DEFAULT_MAX_PIXELS, preprocess};
use reid_model::{ImageInput, InputSpec, Normalization, PixelFormat};
use serde::{Deserialize, Serialize};

use crate::error::TrainError;
use crate::eval::Label;
pub use folders::{FeedbackPair, apply_feedback, read_feedback};
use folders::{folder_identities, held_out};
pub use idx::parse_idx;
use idx::{find_idx, idx_dataset};
pub use market::market_name;
use market::market1501;

/// Where a sample's pixels are.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// Image `index` of an in-memory grey image set (idx files).
    Memory(usize),
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub source: Source,
    pub label: Label,
}

/// Grey images held in memory, `count` x `height` x `width` bytes.
#[derive(Debug)]
pub struct GrayImages {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct Split {
    pub samples: Vec<Sample>,
    pub images: Option<Arc<GrayImages>>,
}

impl Split {
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    pub fn pids(&self) -> Vec<i64> {
        self.samples.iter().map(|s| s.label.pid).collect()
    }

    pub fn labels(&self) -> Vec<Label> {
        self.samples.iter().map(|s| s.label).collect()
    }

    pub fn identities(&self) -> usize {
        self.samples.iter().map(|s| s.label.pid).collect::<std::collections::BTreeSet<_>>().len()
    }

    /// Pre-processes samples `indices` into one `[n, c, h, w]` float buffer.
    pub fn load(&self, indices: &[usize], spec: InputSpec, norm: &Normalization) -> Result<Vec<f32>, TrainError> {
        let mut out = Vec::with_capacity(indices.len() * spec.numel());
        for &i in indices {
            let sample = &self.samples[i];
            let prepared = match &sample.source {
                Source::Memory(index) => {
                    let images = self
                        .images
                        .as_ref()
                        .ok_or_else(|| TrainError::Dataset("in-memory sample without images".into()))?;
                    let size = (images.width * images.height) as usize;
                    let pixels = &images.pixels[index * size..(index + 1) * size];
                    let input = ImageInput::Raw {
                        width: images.width,
                        height: images.height,
                        format: PixelFormat::Gray8,
                        pixels,
                    };
                    preprocess(input, spec, norm, DEFAULT_MAX_PIXELS)?
                }
                Source::File(path) => {
                    let bytes = read_bounded(path, MAX_IMAGE_FILE_BYTES)?;
                    preprocess(ImageInput::Encoded(&bytes), spec, norm, DEFAULT_MAX_PIXELS)
                        .map_err(|e| TrainError::Dataset(format!("{}: {e}", path.display())))?
                }
            };
            out.extend_from_slice(&prepared.data);
        }
        Ok(out)
    }
}

/// A training split and the evaluation split (query and gallery) of a dataset.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub train: Split,
    pub query: Split,
    pub gallery: Split,
    pub protocol: crate::eval::Protocol,
    /// Training identities a person said are different although the model confused them
    /// (rejected matches): the P x K sampler puts both in one batch, as hard negatives.
    pub hard_negatives: Vec<(i64, i64)>,
    /// For tracklet datasets, each training identity's camera and time span (indexed by pid):
    /// what clustering tracklets into pseudo-identities needs for its cannot-link rule. Empty
    /// for the other kinds.
    pub spans: Vec<Span>,
    /// For tracklet datasets, what people said about training tracklets ([`links`]): constraints
    /// on the pseudo-identities.
    pub links: links::Links,
}

impl Dataset {
    /// `train`, and `eval` searched against itself (every image queries the others).
    pub(crate) fn leave_one_out(train: Split, eval: Split) -> Self {
        Dataset {
            train,
            query: eval.clone(),
            gallery: eval,
            protocol: crate::eval::Protocol::LeaveOneOut,
            hard_negatives: Vec::new(),
            spans: Vec::new(),
            links: links::Links::default(),
        }
    }
}

/// Where and when a training tracklet was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub camera: i64,
    pub start_ms: i64,
    pub end_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DatasetConfig {
    /// Fashion-MNIST idx files (Debian's `dataset-fashion-mnist` by default). Classes are the
    /// identities: the open-set split trains on some classes and evaluates on unseen ones.
    FashionMnist {
        #[serde(default = "fashion_mnist_path")]
        path: PathBuf,
        #[serde(flatten)]
        classes: ClassSplit,
    },
    /// MNIST idx files in the same layout.
    Mnist {
        path: PathBuf,
        #[serde(flatten)]
        classes: ClassSplit,
    },
    /// Any idx image/label pair (`*-images-idx3-ubyte[.gz]`, `*-labels-idx1-ubyte[.gz]`).
    Idx {
        train_images: PathBuf,
        train_labels: PathBuf,
        eval_images: PathBuf,
        eval_labels: PathBuf,
        #[serde(flatten)]
        classes: ClassSplit,
    },
    /// One folder per identity; the last `eval_fraction` of identities (by name) are held out.
    /// The identity service's crop folder (`DATA/crops`) has this layout.
    Folders {
        path: PathBuf,
        #[serde(default = "default_eval_fraction")]
        eval_fraction: f64,
        /// JSON lines of feedback pairs `{"same": bool, "a": folder, "b": folder}` (what
        /// `reid feedback` prints): same-person pairs become one identity, different-person pairs
        /// hard negatives.
        #[serde(default)]
        feedback: Option<PathBuf>,
    },
    /// Market-1501 (or DukeMTMC-reID, which uses the same names).
    Market1501 { path: PathBuf },
    /// Ingester tracklet exports. The last `eval_fraction` of the recording's time is held out:
    /// tracklets that start in it are the evaluation identities, and no training image is from
    /// it (times from each tracklet's `tracklet.json`).
    Tracklets {
        path: PathBuf,
        #[serde(default = "default_eval_fraction")]
        eval_fraction: f64,
        /// Links between tracklets people said are the same person or two ([`links`]; `reid
        /// adapt` writes them from the identity service's feedback).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        links: Option<PathBuf>,
    },
}

/// Which classes train and which evaluate, for class-labelled image sets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassSplit {
    #[serde(default = "first_five")]
    pub train_classes: Vec<i64>,
    #[serde(default = "last_five")]
    pub eval_classes: Vec<i64>,
    /// Keep at most this many training images per class (0: all), for quick runs.
    #[serde(default)]
    pub train_per_class: usize,
    /// Keep at most this many evaluation images per class (0: all).
    #[serde(default)]
    pub eval_per_class: usize,
}

fn fashion_mnist_path() -> PathBuf {
    PathBuf::from("/usr/share/datasets/fashion-mnist")
}
fn default_eval_fraction() -> f64 {
    0.2
}
fn first_five() -> Vec<i64> {
    (0..5).collect()
}
fn last_five() -> Vec<i64> {
    (5..10).collect()
}

impl DatasetConfig {
    /// Every path this dataset reads.
    pub fn paths(&self) -> Vec<&Path> {
        match self {
            DatasetConfig::FashionMnist { path, .. }
            | DatasetConfig::Mnist { path, .. }
            | DatasetConfig::Market1501 { path }
            | DatasetConfig::Tracklets { path, links: None, .. } => vec![path],
            DatasetConfig::Tracklets { path, links: Some(links), .. } => vec![path, links],
            DatasetConfig::Idx { train_images, train_labels, eval_images, eval_labels, .. } => {
                vec![train_images, train_labels, eval_images, eval_labels]
            }
            DatasetConfig::Folders { path, feedback, .. } => std::iter::once(path).chain(feedback).collect(),
        }
        .into_iter()
        .map(PathBuf::as_path)
        .collect()
    }

    pub fn load(&self) -> Result<Dataset, TrainError> {
        let dataset = match self {
            DatasetConfig::FashionMnist { path, classes } | DatasetConfig::Mnist { path, classes } => {
                let file = |name: &str| find_idx(path, name);
                idx_dataset(
                    (&file("train-images-idx3-ubyte")?, &file("train-labels-idx1-ubyte")?),
                    (&file("t10k-images-idx3-ubyte")?, &file("t10k-labels-idx1-ubyte")?),
                    classes,
                )?
            }
            DatasetConfig::Idx { train_images, train_labels, eval_images, eval_labels, classes } => {
                idx_dataset((train_images, train_labels), (eval_images, eval_labels), classes)?
            }
            DatasetConfig::Folders { path, eval_fraction, feedback } => {
                let named = folder_identities(path)?;
                match feedback {
                    None => held_out(named.into_iter().map(|(_, images)| images).collect(), *eval_fraction, path)?,
                    Some(file) => {
                        let pairs = read_feedback(file)?;
                        let (identities, negatives) = apply_feedback(named, &pairs);
                        let mut dataset = held_out(identities, *eval_fraction, path)?;
                        let trained = dataset.train.identities() as i64;
                        dataset.hard_negatives =
                            negatives.into_iter().filter(|(a, b)| *a < trained && *b < trained).collect();
                        dataset
                    }
                }
            }
            DatasetConfig::Tracklets { path, eval_fraction, links } => {
                tracklets::tracklets(path, *eval_fraction, links.as_deref())?
            }
            DatasetConfig::Market1501 { path } => market1501(path)?,
        };
        if dataset.train.identities() < 2 {
            return Err(TrainError::Dataset(format!(
                "training needs at least two identities, found {}",
                dataset.train.identities()
            )));
        }
        if dataset.query.is_empty() || dataset.gallery.is_empty() {
            return Err(TrainError::Dataset("the evaluation split is empty".into()));
        }
        Ok(dataset)
    }
}

/// Largest image file a dataset may hold.
pub(crate) const MAX_IMAGE_FILE_BYTES: u64 = 64 << 20;
/// Largest idx file, compressed or not (Fashion-MNIST's largest is 47 MB).
pub(super) const MAX_IDX_BYTES: u64 = 2 << 30;
/// Largest feedback file.
pub(super) const MAX_FEEDBACK_BYTES: u64 = 64 << 20;

/// Reads a file of one JSON object a line (blank lines skipped; at most `limit` bytes), naming the
/// line that does not parse.
pub(crate) fn read_json_lines<T: serde::de::DeserializeOwned>(path: &Path, limit: u64) -> Result<Vec<T>, TrainError> {
    let bytes = read_bounded(path, limit)?;
    let text = String::from_utf8(bytes).map_err(|e| TrainError::Dataset(format!("{}: {e}", path.display())))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line)
                .map_err(|e| TrainError::Dataset(format!("{} line {}: {e}", path.display(), i + 1)))
        })
        .collect()
}

/// Reads a regular file of at most `limit` bytes: a device, a pipe or `/dev/zero` named as
/// data is refused, not read until memory runs out.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, TrainError> {
    let file = std::fs::File::open(path).map_err(TrainError::io(path))?;
    let meta = file.metadata().map_err(TrainError::io(path))?;
    if !meta.is_file() {
        return Err(TrainError::Dataset(format!("{} is not a regular file", path.display())));
    }
    if meta.len() > limit {
        return Err(TrainError::Dataset(format!("{} is larger than {limit} bytes", path.display())));
    }
    let mut out = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1).read_to_end(&mut out).map_err(TrainError::io(path))?;
    if out.len() as u64 > limit {
        return Err(TrainError::Dataset(format!("{} grew past {limit} bytes while read", path.display())));
    }
    Ok(out)
}

pub(super) fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png" | "bmp" | "webp"))
}

pub(super) fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, TrainError> {
    if !dir.is_dir() {
        return Err(TrainError::Dataset(format!("{} is not a folder", dir.display())));
    }
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(dir).map_err(TrainError::io(dir))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    Ok(entries)
}

/// An identity's images, each with the camera that saw it.
pub(super) type Identity = Vec<(PathBuf, i64)>;

/// The images of `ids` as samples, pids from `offset`.
pub(super) fn samples_of(ids: &[Identity], offset: usize) -> Vec<Sample> {
    ids.iter()
        .enumerate()
        .flat_map(|(i, images)| {
            images.iter().map(move |(p, cam)| Sample {
                source: Source::File(p.clone()),
                label: Label { pid: (offset + i) as i64, camid: *cam },
            })
        })
        .collect()
}

#[cfg(test)]
/// Fixtures the dataset readers' tests share.
pub(super) mod testing {
    use std::path::{Path, PathBuf};

    pub(crate) fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("reid-data-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    pub(crate) fn touch_jpeg(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let jpeg = reid_model::preprocess::encode_jpeg(8, 16, &[128; 8 * 16 * 3]).unwrap();
        std::fs::write(path, jpeg).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn missing_folders_and_too_few_identities_are_clear_errors() {
        let err = DatasetConfig::Folders { path: "/nonexistent/reid".into(), eval_fraction: 0.2, feedback: None }
            .load()
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/reid is not a folder"), "{err}");
        let root = temp("one-identity");
        for i in 0..4 {
            touch_jpeg(&root.join("only").join(format!("{i}.jpg")));
        }
        let err = DatasetConfig::Folders { path: root.clone(), eval_fraction: 0.2, feedback: None }.load().unwrap_err();
        assert!(err.to_string().contains("1 identities"), "{err}");
        std::fs::remove_dir_all(root).unwrap();
        let err = DatasetConfig::FashionMnist {
            path: "/nonexistent/fmnist".into(),
            classes: ClassSplit {
                train_classes: vec![0, 1],
                eval_classes: vec![2],
                train_per_class: 0,
                eval_per_class: 0,
            },
        }
        .load()
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/fmnist is not a folder"), "{err}");
    }

    #[test]
    fn only_regular_files_of_bounded_size_are_read() {
        let err = read_bounded(Path::new("/dev/zero"), 1 << 20).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, vec![7u8; 100]).unwrap();
        assert_eq!(read_bounded(&file, 100).unwrap().len(), 100);
        assert!(read_bounded(&file, 99).unwrap_err().to_string().contains("larger than"));
    }
}
