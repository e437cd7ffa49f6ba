//! A training run: epochs of sampled batches, mined pairs or triplets, the loss, Adam; then an
//! evaluation, a checkpoint, the best model so far, the metrics history and the plots.
//!
//! A run lives in one folder:
//! ```text
//! RUN/config.toml            what was asked
//! RUN/history.json, .csv     one row per epoch
//! RUN/checkpoint/            model, optimiser moments, cluster memory, state.json (written last: the commit point)
//! RUN/best/                  model.safetensors + model.json: the best epoch by mAP, servable as is
//! RUN/plots/*.png            loss, active triplets, CMC, 2-D PCA of the embedding space
//! ```
//! Every epoch reseeds its random streams from (seed, epoch), so a run resumed from the checkpoint
//! of epoch N continues exactly as the uninterrupted run would have.

mod files;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::adam::Adam;
use crate::augment::PixelScale;
use crate::config::{Keep, Reduction, RunConfig, SamplerKind};
use crate::data::{Dataset, Split};
use crate::error::TrainError;
use crate::eval::{self, Protocol, Retrieval, Verification};
use crate::loss;
use crate::memory::ClusterMemory;
use crate::miner::{self, Mined};
use crate::model::TrainModel;
use crate::pseudo::{self, PseudoLabels};
use crate::sampler::{PairSampler, PkSampler};
use files::{read_json, write_csv, write_json};

/// What a run reports while it goes.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Progress { epoch: u32, step: u64, loss: f64, active_fraction: f64 },
    Epoch(EpochRecord),
    Message { text: String },
}

/// One row of the metrics history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: u32,
    pub loss: f64,
    /// Fraction of mined pairs or triplets with a non-zero loss.
    pub active_fraction: f64,
    pub seconds: f64,
    pub rank1: f64,
    pub rank5: f64,
    pub rank10: f64,
    #[serde(rename = "mAP")]
    pub map: f64,
    #[serde(rename = "mINP")]
    pub minp: f64,
    pub tar_at_far_1e2: f64,
    pub tar_at_far_1e3: f64,
    pub eer: f64,
    /// Recommended open-set threshold (cosine similarity at FAR 1e-3).
    pub threshold: f64,
    /// `cmc[k]`: rank-(k+1) accuracy; for class-level retrieval, Recall@(k+1).
    pub cmc: Vec<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    epochs_done: u32,
    step: u64,
    best_map: Option<f64>,
    best_epoch: Option<u32>,
    adam_step: i64,
    /// With `pseudo_labels`: the last clustering, a group per training tracklet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    groups: Vec<i64>,
}

#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub dir: PathBuf,
    pub history: Vec<EpochRecord>,
    pub best: Option<EpochRecord>,
}

/// Runs (or, when `dir` holds a checkpoint, resumes) training. `events` is called from this thread;
/// `cancel` is checked between steps.
pub fn train(
    config: &RunConfig,
    dir: &Path,
    events: &mut dyn FnMut(Event),
    cancel: &AtomicBool,
) -> Result<RunOutcome, TrainError> {
    config.validate()?;
    if config.training.threads > 0 {
        reid_model::set_inference_threads(config.training.threads);
    }
    let device = config.training.device.resolve()?;
    let dataset = config.dataset.load()?;
    let mut run = Run::start(config, dir, &dataset, device)?;
    events(Event::Message {
        text: format!(
            "{} training images of {} identities, {} queries, {} gallery; starting at epoch {}",
            dataset.train.len(),
            dataset.train.identities(),
            dataset.query.len(),
            dataset.gallery.len(),
            run.state.epochs_done + 1
        ),
    });
    if run.history.is_empty() {
        run.baseline(&dataset, events)?;
    }
    for epoch in run.state.epochs_done + 1..=config.training.epochs {
        run.epoch(epoch, &dataset, events, cancel)?;
    }
    let best = run.state.best_epoch.and_then(|e| run.history.iter().find(|r| r.epoch == e).cloned());
    Ok(RunOutcome { dir: dir.to_owned(), history: run.history, best })
}

struct Run<'a> {
    config: &'a RunConfig,
    dir: &'a Path,
    model: TrainModel,
    adam: Adam,
    state: State,
    history: Vec<EpochRecord>,
    device: Device,
    /// Pre-processed tensors of in-memory splits (train, query, gallery), made once.
    cache: [Option<Tensor>; 3],
    /// Each training image's identity as the sampler and the loss see it: the dataset's own, or
    /// with `pseudo_labels` its tracklet's current group.
    labels: Vec<i64>,
    /// Built from `labels`, again whenever they change.
    sampler: BatchSampler,
    /// With `pseudo_labels.memory`: the groups' centroids, made at each clustering.
    memory: Option<ClusterMemory>,
}

enum BatchSampler {
    Pk(PkSampler),
    Pairs(PairSampler),
}

static INIT_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

const TRAIN: usize = 0;
const QUERY: usize = 1;
const GALLERY: usize = 2;

/// The cluster memory's centroids in a checkpoint.
const MEMORY: &str = "checkpoint/memory.safetensors";

impl<'a> Run<'a> {
    fn start(config: &'a RunConfig, dir: &'a Path, dataset: &Dataset, device: Device) -> Result<Self, TrainError> {
        std::fs::create_dir_all(dir.join("checkpoint")).map_err(TrainError::io(dir))?;
        std::fs::write(dir.join("config.toml"), config.to_toml()).map_err(TrainError::io(dir.join("config.toml")))?;
        let classes = dataset.train.identities();
        let mut model = {
            // The initial weights come from libtorch's process-wide generator: seed it, and keep
            // other runs in this process from drawing from it meanwhile.
            let _guard = INIT_LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            tch::manual_seed(config.training.seed as i64);
            TrainModel::new(config, classes.max(1), device)?
        };
        let mut adam = Adam::new(model.trainable(), config.optimizer);
        let state_path = dir.join("checkpoint/state.json");
        let (state, history) = if state_path.is_file() {
            let state: State = read_json(&state_path)?;
            model.load_all(&dir.join("checkpoint/model.safetensors"))?;
            // The model's tensors were overwritten in place: the optimiser still points at them.
            adam.load(&dir.join("checkpoint/optimizer.safetensors"), state.adam_step)?;
            let history: Vec<EpochRecord> = read_json(&dir.join("history.json"))?;
            let done = state.epochs_done;
            (state, history.into_iter().filter(|r| r.epoch <= done).collect())
        } else {
            (State::default(), Vec::new())
        };
        let spec = config.model.input();
        let norm = config.model.normalization();
        let cache_split = |split: &Split| -> Result<Option<Tensor>, TrainError> {
            if split.images.is_none() {
                return Ok(None);
            }
            let all: Vec<usize> = (0..split.len()).collect();
            let data = split.load(&all, spec, &norm)?;
            Ok(Some(to_tensor(&data, all.len(), spec)))
        };
        let cache = [cache_split(&dataset.train)?, cache_split(&dataset.query)?, cache_split(&dataset.gallery)?];
        if config.pseudo_labels.is_some() && dataset.spans.len() != classes {
            return Err(TrainError::Config("pseudo_labels need the tracklets' spans (a tracklets dataset)".into()));
        }
        let labels = grouped(&dataset.train.pids(), &state.groups);
        let sampler = build_sampler(config, &labels, &dataset.hard_negatives)?;
        let memory_path = dir.join(MEMORY);
        let memory = match config.pseudo_labels.as_ref().and_then(|p| p.memory) {
            Some(memory) if !state.groups.is_empty() => {
                let saved = Tensor::read_safetensors(&memory_path)?;
                let centroids = saved
                    .into_iter()
                    .find(|(n, _)| n == "centroids")
                    .map(|(_, t)| t)
                    .ok_or_else(|| TrainError::Config(format!("{} holds no centroids", memory_path.display())))?;
                Some(ClusterMemory::with_centroids(centroids.to_device(device), memory))
            }
            _ => None,
        };
        Ok(Run { config, dir, model, adam, state, history, device, cache, labels, sampler, memory })
    }

    /// Clusters the training tracklets with the current model into pseudo-identities.
    fn regroup(
        &mut self,
        epoch: u32,
        pseudo: &PseudoLabels,
        dataset: &Dataset,
        events: &mut dyn FnMut(Event),
    ) -> Result<(), TrainError> {
        let embeddings = self.embed_split(&dataset.train, TRAIN, false)?;
        let dim = embeddings.size()[1] as usize;
        let means = pseudo::tracklet_means(&host(&embeddings), dim, &dataset.train.pids(), dataset.spans.len());
        self.state.groups = pseudo.group(&means, &dataset.spans, &dataset.links);
        self.labels = grouped(&dataset.train.pids(), &self.state.groups);
        self.sampler = build_sampler(self.config, &self.labels, &dataset.hard_negatives)?;
        let groups = self.state.groups.iter().max().map_or(0, |g| g + 1);
        if let Some(memory) = pseudo.memory {
            self.memory = Some(ClusterMemory::from_embeddings(&embeddings, &self.labels, groups, memory));
        }
        let mut sizes: Vec<usize> = vec![0; groups as usize];
        self.state.groups.iter().for_each(|&g| sizes[g as usize] += 1);
        events(Event::Message {
            text: format!(
                "epoch {epoch}: {} tracklets in {groups} pseudo-identities ({} of several tracklets, the largest {})",
                dataset.spans.len(),
                sizes.iter().filter(|&&n| n > 1).count(),
                sizes.iter().max().unwrap_or(&0)
            ),
        });
        Ok(())
    }

    fn batch(&self, split: &Split, which: usize, indices: &[usize]) -> Result<Tensor, TrainError> {
        let xs = match &self.cache[which] {
            Some(all) => {
                all.index_select(0, &Tensor::from_slice(&indices.iter().map(|&i| i as i64).collect::<Vec<_>>()))
            }
            None => {
                let spec = self.config.model.input();
                let data = split.load(indices, spec, &self.config.model.normalization())?;
                to_tensor(&data, indices.len(), spec)
            }
        };
        Ok(xs.to_device(self.device))
    }

    /// Training images `indices`, augmented.
    fn augmented(&self, split: &Split, indices: &[usize], rng: &mut StdRng) -> Result<Tensor, TrainError> {
        let norm = self.config.model.normalization();
        Ok(self.config.augment.apply(&self.batch(split, TRAIN, indices)?, PixelScale::of(&norm), rng))
    }

    fn features(&self, xs: &Tensor, train: bool) -> Tensor {
        let raw = self.model.embed(xs, train);
        if self.config.model.normalize_embeddings { loss::normalise(&raw) } else { raw }
    }

    fn epoch(
        &mut self,
        epoch: u32,
        dataset: &Dataset,
        events: &mut dyn FnMut(Event),
        cancel: &AtomicBool,
    ) -> Result<(), TrainError> {
        let started = Instant::now();
        if let Some(pseudo) = self.config.pseudo_labels.as_ref().filter(|p| p.due(epoch)) {
            self.regroup(epoch, pseudo, dataset, events)?;
        }
        let mut rng =
            StdRng::seed_from_u64(self.config.training.seed.wrapping_mul(1_000_003).wrapping_add(u64::from(epoch)));
        let pids = self.labels.clone();
        let mut batches = self.epoch_batches(&pids, &mut rng)?;
        if self.config.training.steps_per_epoch > 0 {
            batches.truncate(self.config.training.steps_per_epoch);
        }
        let (mut loss_sum, mut active, mut mined, mut steps) = (0f64, 0usize, 0usize, 0usize);
        let total = batches.len();
        for (i, batch) in batches.into_iter().enumerate() {
            if cancel.load(Ordering::Relaxed) {
                return Err(TrainError::Cancelled);
            }
            let out = self.step(&dataset.train, &pids, batch, &mut rng)?;
            loss_sum += out.loss;
            active += out.active;
            mined += out.mined;
            steps += 1;
            self.state.step += 1;
            if (i + 1) % 10 == 0 || i + 1 == total {
                events(Event::Progress {
                    epoch,
                    step: self.state.step,
                    loss: loss_sum / steps as f64,
                    active_fraction: active as f64 / mined.max(1) as f64,
                });
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        let evaluation = self.evaluate(dataset, &mut rng)?;
        let record =
            evaluation.record(epoch, loss_sum / steps.max(1) as f64, active as f64 / mined.max(1) as f64, seconds);
        self.history.push(record.clone());
        let keep = match self.config.training.keep {
            Keep::BestMap => self.state.best_map.is_none_or(|best| record.map > best),
            Keep::Last => true,
        };
        if keep {
            self.state.best_map = Some(record.map);
            self.state.best_epoch = Some(epoch);
            self.export_best(&record)?;
        }
        self.state.epochs_done = epoch;
        self.checkpoint()?;
        files::run_plots(&self.dir.join("plots"), &self.history, &evaluation.scatter)?;
        events(Event::Epoch(record));
        Ok(())
    }

    fn epoch_batches(&self, pids: &[i64], rng: &mut StdRng) -> Result<Vec<Vec<usize>>, TrainError> {
        match &self.sampler {
            BatchSampler::Pk(sampler) => Ok(sampler.epoch(rng)),
            // Pair batches are drawn per step; here only their number, one epoch = the images once.
            BatchSampler::Pairs(_) => {
                let steps = (pids.len() / (2 * self.config.sampler.pairs_per_batch)).max(1);
                Ok(vec![Vec::new(); steps])
            }
        }
    }

    /// One optimisation step on `batch` (for pair sampling, the batch is drawn here).
    fn step(
        &mut self,
        train: &Split,
        pids: &[i64],
        batch: Vec<usize>,
        rng: &mut StdRng,
    ) -> Result<StepOutcome, TrainError> {
        let Some(out) = self.batch_loss(train, pids, batch, rng, true)? else {
            return Ok(StepOutcome { loss: 0.0, active: 0, mined: 0 });
        };
        self.adam.zero_grad();
        out.total.backward();
        self.adam.step();
        if let Some(memory) = &mut self.memory {
            memory.update(&out.features, &out.labels);
        }
        Ok(StepOutcome { loss: out.total.double_value(&[]), active: out.active, mined: out.mined })
    }

    /// The batch loss with its count of active and mined pairs or triplets; `None` when nothing
    /// was mined.
    fn batch_loss(
        &self,
        train: &Split,
        pids: &[i64],
        batch: Vec<usize>,
        rng: &mut StdRng,
        training: bool,
    ) -> Result<Option<BatchLoss>, TrainError> {
        let lc = &self.config.loss;
        let (labels, features, dist, mined) = match &self.sampler {
            BatchSampler::Pk(_) => {
                let labels: Vec<i64> = batch.iter().map(|&i| pids[i]).collect();
                let features = self.features(&self.augmented(train, &batch, rng)?, training);
                let dist = loss::pairwise(&features, lc.distance);
                let triplets =
                    miner::mine(self.config.miner.kind, &host(&dist.detach()), &labels, lc.margin as f32, rng);
                (labels, features, dist, Mined::Triplets(triplets))
            }
            BatchSampler::Pairs(sampler) => {
                let pairs = sampler.sample(self.config.sampler.pairs_per_batch, rng);
                let mut indices: Vec<usize> =
                    pairs.iter().flat_map(|p| [p.a, p.b].into_iter().chain(p.candidates.iter().copied())).collect();
                indices.sort_unstable();
                indices.dedup();
                let features = self.features(&self.augmented(train, &indices, rng)?, training);
                let dist = loss::pairwise(&features, lc.distance);
                let hardest = miner::hardest_pairs(&pairs, &indices, &host(&dist.detach()));
                let labels = indices.iter().map(|&i| pids[i]).collect();
                (labels, features, dist, Mined::Pairs(hardest))
            }
        };
        let per_item = if mined.is_empty() { None } else { loss::per_item(lc.kind, &dist, &mined, lc.margin) };
        let Some(per_item) = per_item else {
            return Ok(None);
        };
        let mined = per_item.size()[0] as usize;
        let active = per_item.gt(0.0).sum(Kind::Int64).int64_value(&[]) as usize;
        let mut total = match self.config.loss.reduction {
            Reduction::Mean => per_item.mean(Kind::Float),
            Reduction::MeanNonzero => per_item.sum(Kind::Float) / (active.max(1) as f64),
        };
        if let Some(logits) = self.model.logits(&features, training) {
            let targets = Tensor::from_slice(&labels).to_device(self.device);
            total += self.config.loss.ce_weight
                * loss::cross_entropy_smoothed(&logits, &targets, self.config.loss.label_smoothing);
        }
        if let Some(memory) = &self.memory {
            total += memory.config().weight * memory.loss(&features, &labels);
        }
        Ok(Some(BatchLoss { total, active, mined, features, labels }))
    }

    /// Epoch 0: the untrained network's loss (over the first batches, no update) and metrics,
    /// the baseline that training must beat.
    fn baseline(&mut self, dataset: &Dataset, events: &mut dyn FnMut(Event)) -> Result<(), TrainError> {
        let mut rng = StdRng::seed_from_u64(self.config.training.seed);
        let pids = self.labels.clone();
        let (mut loss_sum, mut active, mut mined, mut n) = (0f64, 0usize, 0usize, 0usize);
        for batch in self.epoch_batches(&pids, &mut rng)?.into_iter().take(10) {
            let out = tch::no_grad(|| self.batch_loss(&dataset.train, &pids, batch, &mut rng, false))?;
            if let Some(out) = out {
                loss_sum += out.total.double_value(&[]);
                active += out.active;
                mined += out.mined;
                n += 1;
            }
        }
        let evaluation = self.evaluate(dataset, &mut rng)?;
        let record = evaluation.record(0, loss_sum / n.max(1) as f64, active as f64 / mined.max(1) as f64, 0.0);
        self.history.push(record.clone());
        write_json(&self.dir.join("history.json"), &self.history)?;
        events(Event::Epoch(record));
        Ok(())
    }

    fn evaluate(&self, dataset: &Dataset, rng: &mut StdRng) -> Result<Evaluation, TrainError> {
        let flip = self.config.training.flip;
        let query = self.embed_split(&dataset.query, QUERY, flip)?;
        let gallery = if dataset.protocol == Protocol::LeaveOneOut {
            query.shallow_clone()
        } else {
            self.embed_split(&dataset.gallery, GALLERY, flip)?
        };
        // Cosine distance on unit vectors: what the embedder serves and the identity service uses.
        let dist = host(&(1.0 - query.matmul(&gallery.tr())));
        let retrieval =
            eval::retrieval(&dist, &dataset.query.labels(), &dataset.gallery.labels(), 20, dataset.protocol);

        // Verification over all pairs of a random subset of the gallery's identified items.
        let labels = dataset.gallery.labels();
        let mut items: Vec<usize> = (0..labels.len()).filter(|&i| labels[i].pid >= 0).collect();
        items.shuffle(rng);
        items.truncate(self.config.training.verification_items.max(2));
        let idx = Tensor::from_slice(&items.iter().map(|&i| i as i64).collect::<Vec<_>>()).to_device(gallery.device());
        let subset = gallery.index_select(0, &idx);
        let sims = host(&subset.matmul(&subset.tr()));
        let (mut scores, mut same) = (Vec::new(), Vec::new());
        for i in 0..items.len() {
            for j in i + 1..items.len() {
                scores.push(sims[i * items.len() + j]);
                same.push(labels[items[i]].pid == labels[items[j]].pid);
            }
        }
        let verification = eval::verification(&scores, &same);
        let scatter_n = items.len().min(1500);
        let scatter = crate::plot::Scatter {
            points: host(&crate::plot::pca2(&subset.narrow(0, 0, scatter_n as i64))),
            labels: items[..scatter_n].iter().map(|&i| labels[i].pid).collect(),
        };
        Ok(Evaluation { retrieval, verification, scatter })
    }

    /// L2-normalised embeddings of a whole split, in eval mode; with `flip`, each the mean of the
    /// image's and its mirror image's, as a card with `flip` serves them.
    fn embed_split(&self, split: &Split, which: usize, flip: bool) -> Result<Tensor, TrainError> {
        let mut parts = Vec::new();
        let all: Vec<usize> = (0..split.len()).collect();
        for chunk in all.chunks(256) {
            let xs = self.batch(split, which, chunk)?;
            parts.push(tch::no_grad(|| {
                let plain = loss::normalise(&self.model.embed(&xs, false));
                if flip {
                    loss::normalise(&(plain + loss::normalise(&self.model.embed(&xs.flip([3]), false))))
                } else {
                    plain
                }
            }));
        }
        Ok(Tensor::cat(&parts, 0))
    }

    fn checkpoint(&mut self) -> Result<(), TrainError> {
        let ck = self.dir.join("checkpoint");
        self.model.save_all(&ck.join("model.safetensors"))?;
        self.state.adam_step = self.adam.save(&ck.join("optimizer.safetensors"))?;
        if let Some(memory) = &self.memory {
            Tensor::write_safetensors(&[("centroids", &memory.centroids)], self.dir.join(MEMORY))?;
        }
        write_json(&self.dir.join("history.json"), &self.history)?;
        write_csv(&self.dir.join("history.csv"), &self.history)?;
        write_json(&ck.join("state.json"), &self.state)
    }

    fn export_best(&self, record: &EpochRecord) -> Result<(), TrainError> {
        let best = self.dir.join("best");
        std::fs::create_dir_all(&best).map_err(TrainError::io(&best))?;
        self.model.save_backbone(&best.join("model.safetensors"))?;
        let run = self.dir.file_name().and_then(|n| n.to_str()).unwrap_or("run");
        let card = files::best_card(self.config, run, record);
        write_json(&best.join("model.json"), &card)
    }
}

/// A batch's loss, what it was made of, and the features and labels the memory update needs.
struct BatchLoss {
    total: Tensor,
    active: usize,
    mined: usize,
    features: Tensor,
    labels: Vec<i64>,
}

struct StepOutcome {
    loss: f64,
    active: usize,
    mined: usize,
}

struct Evaluation {
    retrieval: Retrieval,
    verification: Verification,
    scatter: crate::plot::Scatter,
}

impl Evaluation {
    fn record(&self, epoch: u32, loss: f64, active_fraction: f64, seconds: f64) -> EpochRecord {
        let (r, v) = (&self.retrieval, &self.verification);
        let threshold =
            if v.at_far_1e3.threshold.is_finite() { v.at_far_1e3.threshold } else { v.eer_threshold.clamp(-1.0, 1.0) };
        EpochRecord {
            epoch,
            loss,
            active_fraction,
            seconds,
            rank1: r.rank(1),
            rank5: r.rank(5),
            rank10: r.rank(10),
            map: r.map,
            minp: r.minp,
            tar_at_far_1e2: v.at_far_1e2.tar,
            tar_at_far_1e3: v.at_far_1e3.tar,
            eer: v.eer,
            threshold,
            cmc: r.cmc.clone(),
        }
    }
}

/// Identities per image: `pids`, or with groups, each pid's group.
fn grouped(pids: &[i64], groups: &[i64]) -> Vec<i64> {
    if groups.is_empty() { pids.to_vec() } else { pids.iter().map(|&p| groups[p as usize]).collect() }
}

fn build_sampler(
    config: &RunConfig,
    labels: &[i64],
    hard_negatives: &[(i64, i64)],
) -> Result<BatchSampler, TrainError> {
    let s = &config.sampler;
    Ok(match s.kind {
        SamplerKind::Pk => {
            BatchSampler::Pk(PkSampler::new(labels, s.p, s.k, s.with_replacement)?.with_hard_negatives(hard_negatives))
        }
        SamplerKind::Pairs => {
            BatchSampler::Pairs(PairSampler::new(labels, s.positive_fraction, s.negative_candidates)?)
        }
    })
}

fn to_tensor(data: &[f32], n: usize, spec: reid_model::InputSpec) -> Tensor {
    Tensor::from_slice(data).view([n as i64, spec.channels() as i64, i64::from(spec.height), i64::from(spec.width)])
}

/// A tensor's values on the host, flattened.
pub(crate) fn host(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.to_device(Device::Cpu).to_kind(Kind::Float).contiguous().view([-1i64].as_slice()))
        .unwrap_or_default()
}
