//! Scoring a detector and a tracker against labelled ground truth, with the definitions users
//! compare across systems (py-motmetrics and TrackEval are the references):
//!
//! - [`mot`]: MOTChallenge files (`frame,id,left,top,width,height,conf,x,y,z`), read into
//!   per-frame boxes; `conf = 0` rows are regions to ignore;
//! - [`assign`]: the minimum-cost assignment every measure matches boxes with;
//! - [`measures`]: detection precision and recall, CLEAR MOT (MOTA, MOTP, ID switches,
//!   fragmentation, mostly tracked and lost) and the identity measures (IDF1, IDP, IDR);
//! - [`retrieval`]: re-identification as retrieval (Rank-k, mAP, mINP) with a cross-time
//!   protocol;
//! - [`rerank`]: k-reciprocal re-ranking of a distance matrix, the query-time option;
//! - [`mtmc`]: identities across cameras (tracklet purity, people covered, pairwise precision and
//!   recall of "same person").
//!
//! Pure arithmetic on boxes and distances: running the detector and tracker is `reid eval`'s.

pub mod assign;
pub mod measures;
pub mod mot;
pub mod mtmc;
pub mod retrieval;

pub use measures::{Detection, Evaluation, Tracking, evaluate_detection, evaluate_tracking};
pub use mot::{Box2, Frames, Sequence};
pub use mtmc::{Mtmc, Tracklet, evaluate_mtmc};
pub use retrieval::{Retrieval, evaluate_retrieval};
