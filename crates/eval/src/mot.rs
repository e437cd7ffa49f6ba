//! MOTChallenge text files: one box per line, `frame,id,left,top,width,height,conf,x,y,z`
//! (frames from 1, pixels; MOT16/17 ground truth puts class and visibility where x, y are).
//! In ground truth, `conf = 0` marks a box that is not scored: a region to ignore. In results,
//! `conf` is the tracker's score and `id` its track.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// An axis-aligned box: left, top, width, height in pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Box2 {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

impl Box2 {
    pub fn new(x: f64, y: f64, w: f64, h: f64) -> Self {
        Self { x, y, w, h }
    }

    pub fn iou(&self, o: &Box2) -> f64 {
        let ix = (self.x + self.w).min(o.x + o.w) - self.x.max(o.x);
        let iy = (self.y + self.h).min(o.y + o.h) - self.y.max(o.y);
        if ix <= 0.0 || iy <= 0.0 {
            return 0.0;
        }
        let inter = ix * iy;
        inter / (self.w * self.h + o.w * o.h - inter)
    }

    /// The bottom centre: where a person stands.
    pub fn foot(&self) -> (f64, f64) {
        (self.x + self.w / 2.0, self.y + self.h)
    }
}

/// One frame's boxes: those scored, with their ids, and those to ignore.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Frames {
    pub boxes: Vec<(i64, Box2)>,
    pub ignore: Vec<Box2>,
}

/// A whole sequence, by frame number.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sequence {
    pub frames: BTreeMap<u64, Frames>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParseError {
    #[error("line {line}: {reason}")]
    Line { line: usize, reason: String },
}

impl Sequence {
    /// Reads a MOTChallenge file. Blank lines and lines starting with `#` are skipped.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut seq = Sequence::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason: String| ParseError::Line { line: i + 1, reason };
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            if fields.len() < 6 {
                return Err(bad(format!(
                    "{} fields, at least 6 wanted (frame,id,left,top,width,height)",
                    fields.len()
                )));
            }
            let num = |k: usize| -> Result<f64, ParseError> {
                let v: f64 =
                    fields[k].parse().map_err(|_| bad(format!("field {} is not a number: {:?}", k + 1, fields[k])))?;
                if v.is_finite() { Ok(v) } else { Err(bad(format!("field {} is not finite", k + 1))) }
            };
            let frame = num(0)?;
            if frame < 1.0 || frame.fract() != 0.0 || frame > 1e9 {
                return Err(bad(format!("frame {frame} is not a whole number from 1")));
            }
            let id = num(1)?;
            if id.fract() != 0.0 || id.abs() > 1e15 {
                return Err(bad(format!("id {id} is not a whole number")));
            }
            let b = Box2::new(num(2)?, num(3)?, num(4)?, num(5)?);
            if b.w <= 0.0 || b.h <= 0.0 {
                return Err(bad(format!("box {}x{} is empty", b.w, b.h)));
            }
            let conf = if fields.len() > 6 { num(6)? } else { 1.0 };
            let entry = seq.frames.entry(frame as u64).or_default();
            if conf == 0.0 {
                entry.ignore.push(b);
            } else {
                entry.boxes.push((id as i64, b));
            }
        }
        Ok(seq)
    }

    /// Writes the scored boxes back in MOTChallenge form (`conf` 1, x/y/z -1).
    pub fn to_mot(&self) -> String {
        let mut out = String::new();
        for (frame, f) in &self.frames {
            for (id, b) in &f.boxes {
                let _ = writeln!(out, "{frame},{id},{:.2},{:.2},{:.2},{:.2},1,-1,-1,-1", b.x, b.y, b.w, b.h);
            }
        }
        out
    }

    pub fn push(&mut self, frame: u64, id: i64, b: Box2) {
        self.frames.entry(frame).or_default().boxes.push((id, b));
    }

    /// Boxes scored in the whole sequence.
    pub fn len(&self) -> usize {
        self.frames.values().map(|f| f.boxes.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Distinct ids of scored boxes.
    pub fn ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.frames.values().flat_map(|f| f.boxes.iter().map(|(id, _)| *id)).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Only the frames in `first..=last`.
    pub fn between(&self, first: u64, last: u64) -> Sequence {
        Sequence { frames: self.frames.range(first..=last).map(|(k, v)| (*k, v.clone())).collect() }
    }

    /// The ground truth at `frame`: the labelled frame itself, or between two labelled frames
    /// each person present at both ends with their box interpolated linearly, and the ignore
    /// regions of both ends. `None` outside the labelled span.
    pub fn at(&self, frame: u64) -> Option<Frames> {
        if let Some(f) = self.frames.get(&frame) {
            return Some(f.clone());
        }
        let (&before, a) = self.frames.range(..frame).next_back()?;
        let (&after, b) = self.frames.range(frame..).next()?;
        let t = (frame - before) as f64 / (after - before) as f64;
        let mix = |p: f64, q: f64| p + (q - p) * t;
        let boxes = a
            .boxes
            .iter()
            .filter_map(|(id, p)| {
                let (_, q) = b.boxes.iter().find(|(other, _)| other == id)?;
                Some((*id, Box2::new(mix(p.x, q.x), mix(p.y, q.y), mix(p.w, q.w), mix(p.h, q.h))))
            })
            .collect();
        Some(Frames { boxes, ignore: a.ignore.iter().chain(&b.ignore).copied().collect() })
    }

    /// Keeps only boxes whose foot point `inside` accepts (a region-of-interest mask); ignore
    /// regions are kept whole.
    pub fn retain_inside(&mut self, inside: impl Fn(f64, f64) -> bool) {
        for f in self.frames.values_mut() {
            f.boxes.retain(|(_, b)| {
                let (x, y) = b.foot();
                inside(x, y)
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_parse_with_ignore_rows_and_round_trip() {
        let text = "# comment\n1,1,10,20,30,60,1,-1,-1,-1\n1,2,100,20,30,60,1,1,0.8\n2,1,12,20,30,60,0,-1,-1,-1\n\n3,7,1.5,2.5,3,4\n";
        let seq = Sequence::parse(text).unwrap();
        assert_eq!(seq.len(), 3);
        assert_eq!(
            seq.frames[&1].boxes,
            vec![(1, Box2::new(10.0, 20.0, 30.0, 60.0)), (2, Box2::new(100.0, 20.0, 30.0, 60.0))]
        );
        assert_eq!(seq.frames[&2].ignore, vec![Box2::new(12.0, 20.0, 30.0, 60.0)]);
        assert!(seq.frames[&2].boxes.is_empty());
        assert_eq!(seq.ids(), vec![1, 2, 7]);
        let again = Sequence::parse(&seq.to_mot()).unwrap();
        assert_eq!(again.len(), 3);
        assert_eq!(again.frames[&3].boxes, vec![(7, Box2::new(1.5, 2.5, 3.0, 4.0))]);
    }

    #[test]
    fn malformed_lines_are_refused_with_their_number() {
        for (text, line, what) in [
            ("1,1,10,20,30\n", 1, "6 wanted"),
            ("1,1,10,20,30,60\n0,1,10,20,30,60\n", 2, "from 1"),
            ("1.5,1,10,20,30,60\n", 1, "whole"),
            ("1,x,10,20,30,60\n", 1, "not a number"),
            ("1,1,10,20,0,60\n", 1, "empty"),
            ("1,1,10,20,inf,60\n", 1, "finite"),
        ] {
            let e = Sequence::parse(text).unwrap_err();
            let ParseError::Line { line: l, reason } = &e;
            assert_eq!(*l, line, "{text:?}");
            assert!(reason.contains(what), "{text:?}: {reason}");
        }
    }

    #[test]
    fn frames_between_labelled_ones_are_interpolated_for_people_at_both_ends() {
        let mut seq = Sequence::default();
        seq.push(10, 1, Box2::new(0.0, 0.0, 10.0, 20.0));
        seq.push(10, 2, Box2::new(50.0, 0.0, 10.0, 20.0));
        seq.push(20, 1, Box2::new(20.0, 10.0, 20.0, 40.0));
        seq.frames.entry(20).or_default().ignore.push(Box2::new(90.0, 0.0, 5.0, 5.0));
        let f = seq.at(15).unwrap();
        assert_eq!(f.boxes, vec![(1, Box2::new(10.0, 5.0, 15.0, 30.0))], "person 2 left before frame 20");
        assert_eq!(f.ignore.len(), 1);
        assert_eq!(seq.at(10).unwrap(), seq.frames[&10]);
        assert!(seq.at(9).is_none() && seq.at(21).is_none());
    }

    #[test]
    fn iou_and_feet() {
        let a = Box2::new(0.0, 0.0, 10.0, 10.0);
        assert_eq!(a.iou(&a), 1.0);
        assert_eq!(a.iou(&Box2::new(5.0, 0.0, 10.0, 10.0)), 50.0 / 150.0);
        assert_eq!(a.iou(&Box2::new(10.0, 0.0, 10.0, 10.0)), 0.0);
        assert_eq!(a.foot(), (5.0, 10.0));
        let mut seq = Sequence::default();
        seq.push(1, 1, a);
        seq.push(1, 2, Box2::new(50.0, 0.0, 10.0, 10.0));
        seq.retain_inside(|x, _| x < 20.0);
        assert_eq!(seq.ids(), vec![1]);
    }
}
