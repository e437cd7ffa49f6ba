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

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use reid_model::preprocess::{DEFAULT_MAX_PIXELS, preprocess};
use reid_model::{ImageInput, InputSpec, Normalization, PixelFormat};
use serde::{Deserialize, Serialize};

use crate::error::TrainError;
use crate::eval::Label;

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
            | DatasetConfig::Tracklets { path, .. } => vec![path],
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
            DatasetConfig::Tracklets { path, eval_fraction } => {
                tracklet_split(exported_tracklets(path)?, *eval_fraction, path)?
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

/// `DIR/NAME` or `DIR/NAME.gz`, whichever exists.
fn find_idx(dir: &Path, name: &str) -> Result<PathBuf, TrainError> {
    if !dir.is_dir() {
        return Err(TrainError::Dataset(format!("{} is not a folder", dir.display())));
    }
    [dir.join(name), dir.join(format!("{name}.gz"))]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| TrainError::Dataset(format!("{} has no {name}[.gz]", dir.display())))
}

/// Largest image file a dataset may hold.
const MAX_IMAGE_FILE_BYTES: u64 = 64 << 20;
/// Largest idx file, compressed or not (Fashion-MNIST's largest is 47 MB).
const MAX_IDX_BYTES: u64 = 2 << 30;
/// Largest feedback file.
const MAX_FEEDBACK_BYTES: u64 = 64 << 20;

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

fn idx_dataset(train: (&Path, &Path), eval: (&Path, &Path), classes: &ClassSplit) -> Result<Dataset, TrainError> {
    // Evaluation images come from the other file, so shared classes are a closed-set evaluation
    // on unseen images; disjoint classes (the default) are the open-set one re-ID needs.
    let train = idx_split(train.0, train.1, &classes.train_classes, classes.train_per_class)?;
    let eval = idx_split(eval.0, eval.1, &classes.eval_classes, classes.eval_per_class)?;
    Ok(Dataset {
        train,
        query: eval.clone(),
        gallery: eval,
        protocol: crate::eval::Protocol::LeaveOneOut,
        hard_negatives: Vec::new(),
        spans: Vec::new(),
    })
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png" | "bmp" | "webp"))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, TrainError> {
    if !dir.is_dir() {
        return Err(TrainError::Dataset(format!("{} is not a folder", dir.display())));
    }
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(dir).map_err(TrainError::io(dir))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    Ok(entries)
}

/// An identity's images, each with the camera that saw it.
type Identity = Vec<(PathBuf, i64)>;

/// One feedback line: two identity folders a person said are (or are not) the same person.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FeedbackPair {
    pub same: bool,
    pub a: String,
    pub b: String,
}

fn read_feedback(path: &Path) -> Result<Vec<FeedbackPair>, TrainError> {
    let bytes = read_bounded(path, MAX_FEEDBACK_BYTES)?;
    let text =
        String::from_utf8(bytes).map_err(|e| TrainError::Dataset(format!("feedback file {}: {e}", path.display())))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line)
                .map_err(|e| TrainError::Dataset(format!("{} line {}: {e}", path.display(), i + 1)))
        })
        .collect()
}

/// Folds same-person pairs into one identity (union-find over folder names, the first name in
/// sorted order keeps the group) and returns the different-person pairs as positions in the
/// resulting list. Pairs naming a folder that is not there are ignored.
pub fn apply_feedback(named: Vec<(String, Identity)>, pairs: &[FeedbackPair]) -> (Vec<Identity>, Vec<(i64, i64)>) {
    let index: std::collections::HashMap<&str, usize> =
        named.iter().enumerate().map(|(i, (name, _))| (name.as_str(), i)).collect();
    let mut parent: Vec<usize> = (0..named.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for p in pairs.iter().filter(|p| p.same) {
        if let (Some(&a), Some(&b)) = (index.get(p.a.as_str()), index.get(p.b.as_str())) {
            let (ra, rb) = (root(&mut parent, a), root(&mut parent, b));
            parent[ra.max(rb)] = ra.min(rb);
        }
    }
    let roots: Vec<usize> = (0..named.len()).map(|i| root(&mut parent, i)).collect();
    let mut position = vec![usize::MAX; named.len()];
    let mut identities: Vec<Identity> = Vec::new();
    for (i, (_, images)) in named.iter().enumerate() {
        let r = roots[i];
        if position[r] == usize::MAX {
            position[r] = identities.len();
            identities.push(Vec::new());
        }
        identities[position[r]].extend(images.iter().cloned());
    }
    let mut negatives: Vec<(i64, i64)> = pairs
        .iter()
        .filter(|p| !p.same)
        .filter_map(|p| {
            let a = position[roots[*index.get(p.a.as_str())?]] as i64;
            let b = position[roots[*index.get(p.b.as_str())?]] as i64;
            (a != b).then_some((a.min(b), a.max(b)))
        })
        .collect();
    negatives.sort_unstable();
    negatives.dedup();
    (identities, negatives)
}

fn folder_identities(root: &Path) -> Result<Vec<(String, Identity)>, TrainError> {
    let mut identities = Vec::new();
    for dir in sorted_entries(root)?.into_iter().filter(|p| p.is_dir()) {
        let images: Identity = sorted_entries(&dir)?
            .into_iter()
            .filter(|p| is_image(p))
            // A Market-style name inside a folder still tells the camera.
            .map(|p| {
                let cam = market_name(&p).map_or(0, |(_, cam)| cam);
                (p, cam)
            })
            .collect();
        if !images.is_empty() {
            let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            identities.push((name, images));
        }
    }
    Ok(identities)
}

/// One exported tracklet: its camera (position among the camera folders), time span and images
/// with their capture times.
#[derive(Debug, Clone)]
struct Exported {
    camera: i64,
    start_ms: i64,
    end_ms: i64,
    images: Vec<(PathBuf, i64)>,
}

#[derive(Deserialize)]
struct ExportedMeta {
    start_ms: i64,
    end_ms: i64,
    crops: Vec<ExportedCrop>,
}

#[derive(Deserialize)]
struct ExportedCrop {
    file: String,
    captured_at_ms: i64,
}

fn exported_tracklets(root: &Path) -> Result<Vec<Exported>, TrainError> {
    let mut tracklets = Vec::new();
    for (camera, dir) in sorted_entries(root)?.into_iter().filter(|p| p.is_dir()).enumerate() {
        for track in sorted_entries(&dir)?.into_iter().filter(|p| p.is_dir()) {
            let files: Vec<PathBuf> = sorted_entries(&track)?.into_iter().filter(|p| is_image(p)).collect();
            if files.is_empty() {
                continue;
            }
            let meta_path = track.join("tracklet.json");
            let meta: Option<ExportedMeta> = if meta_path.is_file() {
                let bytes = read_bounded(&meta_path, MAX_FEEDBACK_BYTES)?;
                Some(
                    serde_json::from_slice(&bytes)
                        .map_err(|e| TrainError::Dataset(format!("{}: {e}", meta_path.display())))?,
                )
            } else {
                None
            };
            // Without its metadata a tracklet is placed at the start time its folder is named by.
            let named_start = track
                .file_name()
                .and_then(|n| n.to_string_lossy().split('_').next().and_then(|t| t.parse::<i64>().ok()))
                .unwrap_or(0);
            let (start_ms, end_ms) = meta.as_ref().map_or((named_start, named_start), |m| (m.start_ms, m.end_ms));
            let time_of = |path: &Path| {
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                meta.as_ref()
                    .and_then(|m| m.crops.iter().find(|c| c.file == name))
                    .map_or(start_ms, |c| c.captured_at_ms)
            };
            let images = files.into_iter().map(|p| (time_of(&p), p)).map(|(t, p)| (p, t)).collect();
            tracklets.push(Exported { camera: camera as i64, start_ms, end_ms, images });
        }
    }
    Ok(tracklets)
}

/// Splits tracklets by time: the last `fraction` of the span from the first start to the last
/// end is held out. Tracklets starting in it evaluate; the others train on their images from
/// before it.
fn tracklet_split(mut tracklets: Vec<Exported>, fraction: f64, root: &Path) -> Result<Dataset, TrainError> {
    if !(0.0..1.0).contains(&fraction) {
        return Err(TrainError::Config(format!("eval_fraction {fraction} is not in [0, 1)")));
    }
    tracklets.sort_by_key(|t| (t.start_ms, t.camera));
    let (Some(first), Some(last)) =
        (tracklets.iter().map(|t| t.start_ms).min(), tracklets.iter().map(|t| t.end_ms).max())
    else {
        return Err(TrainError::Dataset(format!("{} holds no tracklets with images", root.display())));
    };
    let cut = last - ((last - first) as f64 * fraction).round() as i64;
    let (mut train, mut spans, mut eval) = (Vec::new(), Vec::new(), Vec::new());
    for t in tracklets {
        let camera = t.camera;
        if t.start_ms >= cut && fraction > 0.0 {
            eval.push(t.images.into_iter().map(|(p, _)| (p, camera)).collect::<Identity>());
            continue;
        }
        let before: Vec<(PathBuf, i64)> = t.images.into_iter().filter(|(_, at)| fraction == 0.0 || *at < cut).collect();
        if before.is_empty() {
            continue;
        }
        spans.push(Span { camera, start_ms: t.start_ms, end_ms: t.end_ms.min(cut) });
        train.push(before.into_iter().map(|(p, _)| (p, camera)).collect::<Identity>());
    }
    if train.len() < 2 || eval.is_empty() {
        return Err(TrainError::Dataset(format!(
            "{}: {} tracklets before the held-out last {:.0}% of the time and {} in it; training needs 2 and \
             evaluation 1",
            root.display(),
            train.len(),
            fraction * 100.0,
            eval.len()
        )));
    }
    // A tracklet is seen by one camera: its images query one another (leave-one-out), whatever
    // cameras the others come from.
    let eval = Split { samples: samples_of(&eval, train.len()), images: None };
    Ok(Dataset {
        train: Split { samples: samples_of(&train, 0), images: None },
        query: eval.clone(),
        gallery: eval,
        protocol: crate::eval::Protocol::LeaveOneOut,
        hard_negatives: Vec::new(),
        spans,
    })
}

/// Holds out the last `fraction` of identities. Their first image per camera is a query, the rest
/// the gallery; the re-ID protocol applies when they span cameras.
fn held_out(identities: Vec<Identity>, fraction: f64, root: &Path) -> Result<Dataset, TrainError> {
    if !(0.0..1.0).contains(&fraction) {
        return Err(TrainError::Config(format!("eval_fraction {fraction} is not in [0, 1)")));
    }
    if identities.len() < 3 {
        return Err(TrainError::Dataset(format!(
            "{} holds {} identities with images; training and evaluation need at least 3",
            root.display(),
            identities.len()
        )));
    }
    let held = ((identities.len() as f64 * fraction).round() as usize).clamp(1, identities.len() - 2);
    let split_at = identities.len() - held;
    Ok(split_identities(&identities[..split_at], &identities[split_at..]))
}

/// The images of `ids` as samples, pids from `offset`.
fn samples_of(ids: &[Identity], offset: usize) -> Vec<Sample> {
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

/// Training identities (pids from 0) and evaluation ones (pids after them). The evaluation
/// identities' first image per camera is a query and the rest the gallery when they span cameras;
/// otherwise every image queries the others.
fn split_identities(trained: &[Identity], evaluated: &[Identity]) -> Dataset {
    let split_at = trained.len();
    let train = Split { samples: samples_of(trained, 0), images: None };
    let eval = samples_of(evaluated, split_at);
    let cameras: std::collections::BTreeSet<i64> = eval.iter().map(|s| s.label.camid).collect();
    if cameras.len() > 1 {
        let mut first_seen = std::collections::BTreeSet::new();
        let (query, gallery): (Vec<Sample>, Vec<Sample>) =
            eval.into_iter().partition(|s| first_seen.insert((s.label.pid, s.label.camid)));
        Dataset {
            train,
            query: Split { samples: query, images: None },
            gallery: Split { samples: gallery, images: None },
            protocol: crate::eval::Protocol::ReId,
            hard_negatives: Vec::new(),
            spans: Vec::new(),
        }
    } else {
        let eval = Split { samples: eval, images: None };
        Dataset {
            train,
            query: eval.clone(),
            gallery: eval,
            protocol: crate::eval::Protocol::LeaveOneOut,
            hard_negatives: Vec::new(),
            spans: Vec::new(),
        }
    }
}

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

fn market1501(root: &Path) -> Result<Dataset, TrainError> {
    Ok(Dataset {
        train: market_split(&root.join("bounding_box_train"), true)?,
        query: market_split(&root.join("query"), false)?,
        gallery: market_split(&root.join("bounding_box_test"), false)?,
        protocol: crate::eval::Protocol::ReId,
        hard_negatives: Vec::new(),
        spans: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("reid-data-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn touch_jpeg(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let jpeg = reid_model::preprocess::encode_jpeg(8, 16, &[128; 8 * 16 * 3]).unwrap();
        std::fs::write(path, jpeg).unwrap();
    }

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

    #[test]
    fn reads_folders_and_tracklets_with_held_out_identities() {
        let root = temp("folders");
        for id in ["alice", "bob", "carol", "dave", "erin"] {
            for i in 0..3 {
                touch_jpeg(&root.join(id).join(format!("{i}.jpg")));
            }
        }
        std::fs::write(root.join("alice/notes.txt"), "not an image").unwrap();
        let d = DatasetConfig::Folders { path: root.clone(), eval_fraction: 0.4, feedback: None }.load().unwrap();
        assert_eq!(d.train.identities(), 3);
        assert_eq!(d.train.len(), 9);
        assert_eq!(d.query.pids(), vec![3, 3, 3, 4, 4, 4]);
        assert_eq!(d.protocol, crate::eval::Protocol::LeaveOneOut);
        std::fs::remove_dir_all(&root).unwrap();

        // Tracklets over 0-10 s, the last 30% (from 7 s) held out. Folder names carry the start;
        // one tracklet's metadata times its crops, and its crop from 8 s is not trained on.
        let root = temp("tracklets");
        for (cam, track) in [
            ("cam-a", "0000000000000_t1"),
            ("cam-a", "0000000004000_t2"),
            ("cam-b", "0000000001000_t1"),
            ("cam-b", "0000000009000_t7"),
        ] {
            for i in 0..2 {
                touch_jpeg(&root.join(cam).join(track).join(format!("{i}.jpg")));
            }
        }
        let meta = serde_json::json!({
            "start_ms": 4000, "end_ms": 8000,
            "crops": [{"file": "0.jpg", "captured_at_ms": 5000}, {"file": "1.jpg", "captured_at_ms": 8000}],
        });
        std::fs::write(root.join("cam-a/0000000004000_t2/tracklet.json"), meta.to_string()).unwrap();
        // The last end is 9 s (the folder-named tracklet ends where it starts): cut at 6.3 s.
        let d = DatasetConfig::Tracklets { path: root.clone(), eval_fraction: 0.3 }.load().unwrap();
        assert_eq!(d.train.identities(), 3, "each tracklet is its own pseudo-identity");
        assert_eq!(d.train.len(), 5, "the crop from after the cut is left out");
        assert_eq!(d.query.pids(), vec![3, 3], "the tracklet starting at 9 s evaluates");
        let span = |camera, start_ms, end_ms| Span { camera, start_ms, end_ms };
        assert_eq!(d.spans, vec![span(0, 0, 0), span(1, 1000, 1000), span(0, 4000, 6300)], "in time order");
        assert_eq!(d.train.samples[2].label, Label { pid: 1, camid: 1 });
        let err = DatasetConfig::Tracklets { path: root.clone(), eval_fraction: 0.95 }.load().unwrap_err();
        assert!(err.to_string().contains("before the held-out"), "{err}");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn feedback_merges_same_person_folders_and_pairs_hard_negatives() {
        let root = temp("feedback");
        for id in ["a", "b", "c", "d", "e", "f"] {
            for i in 0..2 {
                touch_jpeg(&root.join(id).join(format!("{i}.jpg")));
            }
        }
        let lines = [
            r#"{"same": true, "a": "c", "b": "a", "camera": "", "track": ""}"#,
            r#"{"same": false, "a": "b", "b": "d"}"#,
            r#"{"same": false, "a": "c", "b": "b"}"#,
            r#"{"same": false, "a": "a", "b": "f"}"#,
            r#"{"same": true, "a": "b", "b": "nobody"}"#,
            "",
        ];
        let file = root.join("pairs.jsonl");
        std::fs::write(&file, lines.join("\n")).unwrap();
        // Folders a+c, b, d, e, f: five identities; f (the last fifth) is held out.
        let d = DatasetConfig::Folders { path: root.clone(), eval_fraction: 0.2, feedback: Some(file.clone()) }
            .load()
            .unwrap();
        assert_eq!(d.train.identities(), 4);
        assert_eq!(d.train.pids(), vec![0, 0, 0, 0, 1, 1, 2, 2, 3, 3], "a and c are one identity");
        assert_eq!(d.hard_negatives, vec![(0, 1), (1, 2)], "b-d and (a+c)-b; a-f is held out");
        std::fs::write(&file, "{\"same\": maybe}").unwrap();
        let err =
            DatasetConfig::Folders { path: root.clone(), eval_fraction: 0.2, feedback: Some(file) }.load().unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        std::fs::remove_dir_all(root).unwrap();
    }

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
    fn idx_parsing_checks_shape() {
        let mut bytes = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2];
        bytes.extend([1, 2, 3, 4, 5, 6, 7, 8]);
        let (shape, data) = parse_idx(&bytes, Path::new("x")).unwrap();
        assert_eq!(shape, vec![2, 2, 2]);
        assert_eq!(data.len(), 8);
        assert!(parse_idx(&bytes[..20], Path::new("x")).is_err());
        assert!(parse_idx(&[1, 2, 3, 4], Path::new("x")).is_err());
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
