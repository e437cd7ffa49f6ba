//! Multi-camera identities scored against ground truth: did each tracklet follow one person, and
//! did the identities the pipeline made put together the tracklets of one person and only those?
//!
//! A tracklet is a camera's track with the identity the pipeline gave it and its boxes, in the
//! ground truth's frames and pixels. Each box is matched to the ground-truth person it overlaps
//! most (IoU at least the threshold) in its frame; ground truth labelled every Nth frame is
//! interpolated between labelled frames for the person present at both ends
//! ([`Sequence::at`]). A box on an ignore region counts for nobody.
//!
//! - **Purity**: a tracklet's person is the one most of its matched boxes match; purity is the
//!   share of matched boxes, over all tracklets, that match their tracklet's person.
//! - **People covered**: ground-truth people who are some tracklet's person.
//! - **Identities made**: distinct identities among tracklets with a person (ideally one per
//!   person covered).
//! - **Pairwise "same person"** over every two tracklets with a person: a pair is *predicted*
//!   same when the pipeline gave both the same identity, *true* same when both have the same
//!   person. Precision = true and predicted / predicted, recall = true and predicted / true. The
//!   same over pairs from different cameras only is what cross-camera re-identification scores.
//! - **Spread** of each person over identities ([`spread`]): where the recall went.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::mot::{Box2, Sequence};

/// One camera's track, with its identity and boxes in ground-truth frames and pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracklet {
    pub camera: String,
    pub track: String,
    pub identity: String,
    pub boxes: Vec<(u64, Box2)>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Pairs {
    pub pairs: usize,
    /// Pairs of one person.
    pub same_person: usize,
    /// Pairs the pipeline put in one identity.
    pub same_identity: usize,
    /// Pairs of one person in one identity.
    pub both: usize,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

impl Pairs {
    fn add(&mut self, same_person: bool, same_identity: bool) {
        self.pairs += 1;
        self.same_person += usize::from(same_person);
        self.same_identity += usize::from(same_identity);
        self.both += usize::from(same_person && same_identity);
    }

    fn finish(mut self) -> Self {
        let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        self.precision = ratio(self.both, self.same_identity);
        self.recall = ratio(self.both, self.same_person);
        self.f1 = ratio(2 * self.both, self.same_identity + self.same_person);
        self
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mtmc {
    pub tracklets: usize,
    /// Tracklets with at least one box on a ground-truth person.
    pub matched_tracklets: usize,
    pub boxes: usize,
    pub matched_boxes: usize,
    pub purity: f64,
    /// Ground-truth people (scored rows).
    pub people: usize,
    pub people_covered: usize,
    pub identities: usize,
    pub cameras: usize,
    pub all: Pairs,
    pub cross_camera: Pairs,
    /// What each identity holds: its tracklets with a person. An identity of two people is
    /// where precision goes; one person over several identities is where recall goes.
    pub composition: BTreeMap<String, Vec<Member>>,
    /// Each person's tracklets over the identities that hold them.
    pub spread: Vec<Spread>,
}

/// A tracklet with a person, as one identity holds it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Member {
    pub camera: String,
    pub track: String,
    /// The ground-truth person most of its matched boxes match.
    pub person: i64,
    /// The share of its matched boxes on that person.
    pub purity: f64,
    /// Its first and last frame.
    pub frames: (u64, u64),
}

/// How one person's tracklets are spread over identities: the pairs of one person that recall
/// counts, and where those left out went. The person's identity is the one holding most of their
/// tracklets (on a tie, the one holding fewest of anyone else's); every other of their tracklets
/// is either in an identity of this person alone (they were split) or in one that holds other
/// people too (they were taken for someone else, which costs precision as well).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spread {
    pub person: i64,
    pub tracklets: usize,
    pub identities: usize,
    /// Pairs of the person's tracklets, and those of them in one identity.
    pub pairs: usize,
    pub joined: usize,
    /// Tracklets outside the person's identity, in identities of this person alone.
    pub apart: usize,
    /// Tracklets outside the person's identity, in identities with other people.
    pub with_others: usize,
}

/// Each person's [`Spread`] over the identities of `composition`, by person.
pub fn spread(composition: &BTreeMap<String, Vec<Member>>) -> Vec<Spread> {
    // Per person, per identity: (their tracklets there, everyone else's there).
    let mut held: BTreeMap<i64, BTreeMap<&str, (usize, usize)>> = BTreeMap::new();
    for (identity, members) in composition {
        let mut by_person: BTreeMap<i64, usize> = BTreeMap::new();
        members.iter().for_each(|m| *by_person.entry(m.person).or_default() += 1);
        for (person, theirs) in by_person {
            held.entry(person).or_default().insert(identity.as_str(), (theirs, members.len() - theirs));
        }
    }
    let pairs = |n: usize| n * n.saturating_sub(1) / 2;
    held.into_iter()
        .map(|(person, identities)| {
            // Most of theirs, then fewest of others; the first in identity order on a full tie.
            let main = identities
                .iter()
                .fold(None, |best: Option<(&str, (usize, usize))>, (id, &(theirs, others))| match best {
                    Some((_, (t, o))) if t > theirs || (t == theirs && o <= others) => best,
                    _ => Some((*id, (theirs, others))),
                })
                .map(|(id, _)| id);
            let outside = identities.iter().filter(|(id, _)| Some(**id) != main);
            let tracklets = identities.values().map(|(t, _)| t).sum();
            Spread {
                person,
                tracklets,
                identities: identities.len(),
                pairs: pairs(tracklets),
                joined: identities.values().map(|(t, _)| pairs(*t)).sum(),
                apart: outside.clone().filter(|(_, (_, others))| *others == 0).map(|(_, (t, _))| t).sum(),
                with_others: outside.filter(|(_, (_, others))| *others > 0).map(|(_, (t, _))| t).sum(),
            }
        })
        .collect()
}

/// The person a box matches in the ground truth, if any.
pub fn person(gt: &Sequence, frame: u64, b: &Box2, iou: f64) -> Option<i64> {
    let f = gt.at(frame)?;
    let best = f.boxes.iter().map(|(id, g)| (Some(*id), g.iou(b))).chain(f.ignore.iter().map(|g| (None, g.iou(b))));
    let (id, overlap) = best.max_by(|a, b| a.1.total_cmp(&b.1))?;
    if overlap >= iou { id } else { None }
}

/// The person most of `people` are, and how many are that person: a tracklet's person from its
/// boxes' matches. On a tie the smallest id; `None` when nobody is matched.
pub fn majority(people: &[Option<i64>]) -> Option<(i64, usize)> {
    let mut votes: BTreeMap<i64, usize> = BTreeMap::new();
    for p in people.iter().flatten() {
        *votes.entry(*p).or_default() += 1;
    }
    // BTreeMap order, first maximum kept.
    votes.into_iter().fold(None, |best, (id, n)| match best {
        Some((_, most)) if most >= n => best,
        _ => Some((id, n)),
    })
}

pub fn evaluate_mtmc(gt: &Sequence, tracklets: &[Tracklet], iou: f64) -> Mtmc {
    let mut labelled: Vec<(&Tracklet, i64)> = Vec::new();
    let mut composition: BTreeMap<String, Vec<Member>> = BTreeMap::new();
    let (mut boxes, mut matched_boxes, mut pure_boxes) = (0, 0, 0);
    for t in tracklets {
        let people: Vec<Option<i64>> = t.boxes.iter().map(|(frame, b)| person(gt, *frame, b, iou)).collect();
        boxes += people.len();
        let Some((id, n)) = majority(&people) else { continue };
        let matched = people.iter().flatten().count();
        matched_boxes += matched;
        pure_boxes += n;
        labelled.push((t, id));
        let frames = t.boxes.iter().map(|(f, _)| *f);
        composition.entry(t.identity.clone()).or_default().push(Member {
            camera: t.camera.clone(),
            track: t.track.clone(),
            person: id,
            purity: n as f64 / matched as f64,
            frames: (frames.clone().min().unwrap_or(0), frames.max().unwrap_or(0)),
        });
    }
    let (mut all, mut cross) = (Pairs::default(), Pairs::default());
    for (i, (a, pa)) in labelled.iter().enumerate() {
        for (b, pb) in &labelled[i + 1..] {
            let (same_person, same_identity) = (pa == pb, a.identity == b.identity);
            all.add(same_person, same_identity);
            if a.camera != b.camera {
                cross.add(same_person, same_identity);
            }
        }
    }
    let covered: BTreeSet<i64> = labelled.iter().map(|(_, p)| *p).collect();
    let identities: BTreeSet<&str> = labelled.iter().map(|(t, _)| t.identity.as_str()).collect();
    let cameras: HashMap<&str, ()> = tracklets.iter().map(|t| (t.camera.as_str(), ())).collect();
    Mtmc {
        tracklets: tracklets.len(),
        matched_tracklets: labelled.len(),
        boxes,
        matched_boxes,
        purity: if matched_boxes == 0 { 0.0 } else { pure_boxes as f64 / matched_boxes as f64 },
        people: gt.ids().len(),
        people_covered: covered.len(),
        identities: identities.len(),
        cameras: cameras.len(),
        all: all.finish(),
        cross_camera: cross.finish(),
        spread: spread(&composition),
        composition,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tracklet_is_the_person_most_of_its_boxes_are_on() {
        assert_eq!(majority(&[Some(4), None, Some(5), Some(5)]), Some((5, 2)));
        assert_eq!(majority(&[Some(5), Some(4)]), Some((4, 1)), "a tie goes to the smaller id");
        assert_eq!(majority(&[None, None]), None);
    }

    fn b(x: f64) -> Box2 {
        Box2::new(x, 0.0, 10.0, 20.0)
    }

    fn t(camera: &str, identity: &str, boxes: &[(u64, f64)]) -> Tracklet {
        Tracklet {
            camera: camera.into(),
            track: format!("{camera}-{identity}-{}", boxes.len()),
            identity: identity.into(),
            boxes: boxes.iter().map(|(f, x)| (*f, b(*x))).collect(),
        }
    }

    /// Person 1 stands at x = 0 and person 2 at x = 100 on frames 1 and 11 (interpolated
    /// between); person 3 walks from x = 200 (frame 1) to x = 300 (frame 11).
    fn gt() -> Sequence {
        let mut gt = Sequence::default();
        for f in [1, 11] {
            gt.push(f, 1, b(0.0));
            gt.push(f, 2, b(100.0));
        }
        gt.push(1, 3, b(200.0));
        gt.push(11, 3, b(300.0));
        gt.frames.entry(11).or_default().ignore.push(b(500.0));
        gt
    }

    #[test]
    fn purity_coverage_and_pairs_come_out_exact() {
        let tracklets = vec![
            // West: person 1, then a tracklet that drifts from person 2 onto person 1 (2 of 3
            // boxes on person 2), then person 3 walking (frame 6: x = 250 interpolated).
            t("west", "A", &[(1, 0.0), (6, 0.0)]),
            t("west", "B", &[(1, 100.0), (6, 100.0), (11, 0.0)]),
            t("west", "C", &[(6, 250.0)]),
            // East: person 1 again in identity A (a cross-camera hit), person 3 in identity B
            // (a false merge with the drifting tracklet of person 2), and boxes on nobody: an
            // ignore region, empty floor, and a frame outside the labelled span.
            t("east", "A", &[(11, 0.0)]),
            t("east", "B", &[(11, 300.0)]),
            t("east", "D", &[(11, 500.0), (6, 700.0), (40, 0.0)]),
        ];
        let m = evaluate_mtmc(&gt(), &tracklets, 0.5);
        assert_eq!((m.tracklets, m.matched_tracklets, m.boxes, m.matched_boxes), (6, 5, 11, 8));
        assert!((m.purity - 7.0 / 8.0).abs() < 1e-12, "{m:?}");
        assert_eq!((m.people, m.people_covered, m.identities, m.cameras), (3, 3, 3, 2));
        // Tracklets with a person: west A(1) B(2) C(3), east A(1) B(3): 10 pairs; same person:
        // wA-eA, wC-eB; same identity: wA-eA, wB-eB; both: wA-eA.
        assert_eq!((m.all.pairs, m.all.same_person, m.all.same_identity, m.all.both), (10, 2, 2, 1));
        assert!((m.all.precision - 0.5).abs() < 1e-12 && (m.all.recall - 0.5).abs() < 1e-12);
        assert!((m.all.f1 - 0.5).abs() < 1e-12);
        // Across cameras: 3 x 2 = 6 pairs, the same four judgements (all pairs above cross).
        assert_eq!(
            (m.cross_camera.pairs, m.cross_camera.same_person, m.cross_camera.same_identity, m.cross_camera.both),
            (6, 2, 2, 1)
        );
        // Identity B holds person 2 on west and person 3 on east: the false merge above.
        let of = |identity: &str| -> Vec<(i64, &str, u64, u64)> {
            m.composition[identity].iter().map(|t| (t.person, t.camera.as_str(), t.frames.0, t.frames.1)).collect()
        };
        assert_eq!(of("A"), [(1, "west", 1, 6), (1, "east", 11, 11)]);
        assert_eq!(of("B"), [(2, "west", 1, 11), (3, "east", 11, 11)]);
        assert_eq!(of("C"), [(3, "west", 6, 6)]);
        assert!((m.composition["B"][0].purity - 2.0 / 3.0).abs() < 1e-12);
        assert!(!m.composition.contains_key("D"), "no box of D is on a person");
        // Person 3's west tracklet has C to itself; the east one was taken into B with person 2.
        let person3 = &m.spread[2];
        assert_eq!((person3.person, person3.tracklets, person3.identities), (3, 2, 2));
        assert_eq!((person3.pairs, person3.joined, person3.apart, person3.with_others), (1, 0, 0, 1));
        let (pairs, joined) = m.spread.iter().fold((0, 0), |(p, j), s| (p + s.pairs, j + s.joined));
        assert_eq!((pairs, joined), (m.all.same_person, m.all.both), "the spread adds up to recall");
    }

    #[test]
    fn spread_tells_a_split_person_from_one_taken_for_someone_else() {
        let member = |person: i64| Member {
            camera: "west".into(),
            track: format!("t{person}"),
            person,
            purity: 1.0,
            frames: (1, 1),
        };
        let composition: BTreeMap<String, Vec<Member>> = [
            ("X".to_string(), vec![member(1), member(1), member(2)]),
            ("Y".to_string(), vec![member(1)]),
            ("Z".to_string(), vec![member(2), member(2)]),
        ]
        .into_iter()
        .collect();
        let s = spread(&composition);
        let row = |s: &Spread| (s.person, s.tracklets, s.identities, s.pairs, s.joined, s.apart, s.with_others);
        // Person 1: two of three in X, the third alone in Y (a split).
        assert_eq!(row(&s[0]), (1, 3, 2, 3, 1, 1, 0));
        // Person 2: two in Z, the third inside X with person 1 (taken for someone else).
        assert_eq!(row(&s[1]), (2, 3, 2, 3, 1, 0, 1));
        assert!(spread(&BTreeMap::new()).is_empty());
    }

    #[test]
    fn one_identity_per_person_scores_one_and_no_tracklets_score_zero() {
        let tracklets = vec![t("west", "A", &[(1, 0.0)]), t("east", "A", &[(11, 0.0)]), t("east", "B", &[(1, 100.0)])];
        let m = evaluate_mtmc(&gt(), &tracklets, 0.5);
        assert_eq!((m.all.precision, m.all.recall, m.all.f1), (1.0, 1.0, 1.0));
        assert_eq!((m.cross_camera.pairs, m.cross_camera.both), (2, 1));
        assert_eq!(m.people_covered, 2);
        let none = evaluate_mtmc(&gt(), &[], 0.5);
        assert_eq!((none.matched_tracklets, none.purity, none.all.f1), (0, 0.0, 0.0));
    }
}
