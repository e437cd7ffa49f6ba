//! The demo's HTML report: the two views, per identity its best crop of each tracklet per
//! camera and a timeline, the people seen on one camera only, and the served model's training
//! plots.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::Context;
use opencv::prelude::*;
use reid_ingester::view::View;
use reid_proto::v1 as pb;

use super::{DemoArgs, short};
use crate::playback::{Seen, secs};

/// What the report shows, from one run of the demo.
pub(super) struct Report<'a> {
    pub(super) args: &'a DemoArgs,
    pub(super) t0: SystemTime,
    pub(super) cameras: &'a [(String, String, View)],
    pub(super) statuses: &'a [pb::CameraStatus],
    pub(super) seen: &'a [Seen],
    /// `seen`, split by [`super::split_by_cameras`].
    pub(super) both: &'a [&'a Seen],
    pub(super) one: &'a [&'a Seen],
    pub(super) model: &'a pb::ModelInfo,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

impl Report<'_> {
    pub(super) fn write(&self) -> anyhow::Result<PathBuf> {
        let out = &self.args.out;
        if out.exists() {
            std::fs::remove_dir_all(out).with_context(|| format!("emptying {}", out.display()))?;
        }
        for sub in ["crops", "views", "training"] {
            std::fs::create_dir_all(out.join(sub))?;
        }
        self.write_views()?;
        let plots = self.copy_training()?;
        let (both, one) = (self.both, self.one);
        let horizon =
            self.seen.iter().flat_map(|s| &s.sightings).map(|x| secs(x.end.as_ref(), self.t0)).fold(1.0, f64::max);

        let mut h = String::new();
        let r = self.model.r#ref.clone().unwrap_or_default();
        let tracklets: usize = self.seen.iter().map(|s| s.sightings.len()).sum();
        write!(
            h,
            "<!doctype html><html><head><meta charset=utf-8><title>reid demo</title><style>\
             body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}\
             .crops img{{height:96px;margin:2px;border:1px solid #ccc}} .cam{{display:inline-block;vertical-align:top;margin-right:1.5em}}\
             .id{{border-top:1px solid #ddd;padding:.6em 0}} table{{border-collapse:collapse}} td,th{{padding:2px 8px;text-align:left}}\
             .plots img{{width:48%;margin:1%}} .views img{{height:260px;margin-right:1em}} code{{background:#f4f4f4}}\
             </style></head><body>\n<h1>reid demo: one video, two cameras, people followed across them</h1>\n"
        )?;
        writeln!(
            h,
            "<p>What happened: the four reid services ran in one process on this machine. <code>{video}</code>, \
             a real recording of pedestrians (795 frames of 768x576 at 10 fps), was played as two cameras that each \
             see a part of the scene, in a different look and with a different clock (below). On each camera a \
             person detector found people, a tracker followed them from frame to frame into <em>tracklets</em>, \
             and the best crops of each tracklet were embedded by the CNN <code>{model} {version}</code> \
             ({dim}-d, {backend} on {device}). The identity service, on Qdrant's embedded engine, gave each tracklet \
             the identity whose embeddings it resembled most (cosine similarity at least {threshold:.2}), or a new \
             identity. {tracklets} tracklets became {n} identities; <b>{both} were seen on both cameras</b>.</p>",
            video = esc(&self.args.video.display().to_string()),
            model = esc(&r.id),
            version = esc(&r.version),
            dim = r.dimension,
            backend = esc(&self.model.backend),
            device = esc(&self.model.device),
            threshold = self.args.threshold.unwrap_or(self.model.match_threshold),
            n = self.seen.len(),
            both = both.len(),
        )?;
        h.push_str("<h2>The two cameras</h2><div class=views>");
        for (id, _, view) in self.cameras {
            let status = self.statuses.iter().find(|s| s.config.as_ref().is_some_and(|c| &c.camera_id == id));
            write!(
                h,
                "<div class=cam><img src=\"views/{id}.jpg\"><br><b>{id}</b>: region x {:.0}-{:.0}% of the frame, \
                 scale {}, gains B/G/R {:?}, brightness {:+}, clock {:+.0} s<br>{} frames, {} tracklets</div>",
                view.region.map_or(0.0, |r| r[0] * 100.0),
                view.region.map_or(100.0, |r| (r[0] + r[2]) * 100.0),
                view.scale,
                view.gains,
                view.brightness,
                view.time_offset_ms as f64 / 1000.0,
                status.map_or(0, |s| s.frames_processed),
                status.map_or(0, |s| s.tracklets_emitted),
            )?;
        }
        h.push_str(
            "</div>\n<h2>People seen on both cameras</h2>\n<p>Per identity: its best crop of every tracklet, \
                    per camera, and when it was seen (each bar a tracklet; time in seconds since the cameras \
                    started, by each camera's own clock). Judge the matches by the crops: where a row shows \
                    different people, the model took them for one. The default model is small and was trained \
                    on the first 70% of this same video without colour augmentation, so people dressed alike \
                    (dark coat, jeans) are merged and colour shifts cost matches; <code>docs/demo.md</code> \
                    has the figures and how to bring a better model.</p>\n",
        );
        for s in both {
            self.identity_html(&mut h, s, horizon)?;
        }
        write!(h, "<h2>Seen on one camera only ({})</h2>\n<details><summary>show</summary>", one.len())?;
        for s in one {
            self.identity_html(&mut h, s, horizon)?;
        }
        h.push_str("</details>\n<h2>How the model was trained</h2>\n");
        if plots.is_empty() {
            h.push_str("<p>The served model's folder has no training record.</p>");
        } else {
            write!(
                h,
                "<p>Plots of the training run that produced <code>{}</code> (in its model folder, <code>training/</code>; \
                 <code>make person-model</code> reproduces it): the triplet loss, the share of triplets still active \
                 under batch-hard mining, the CMC curve on held-out people and a PCA of their embeddings.</p><div class=plots>",
                esc(&r.id)
            )?;
            for p in &plots {
                write!(h, "<img src=\"training/{p}\" alt=\"{p}\">")?;
            }
            h.push_str("</div>");
        }
        h.push_str("\n</body></html>\n");
        let index = out.join("index.html");
        std::fs::write(&index, h).with_context(|| format!("writing {}", index.display()))?;
        Ok(index)
    }

    fn identity_html(&self, h: &mut String, s: &Seen, horizon: f64) -> anyhow::Result<()> {
        let id = &s.summary.identity_id;
        write!(h, "<div class=id><b>{}</b> ({} tracklets)<br>", esc(short(id)), s.sightings.len())?;
        for (camera, _, _) in self.cameras {
            let mine = s.on(camera);
            if mine.is_empty() {
                continue;
            }
            write!(h, "<div class=cam>{camera}<div class=crops>")?;
            for (i, sighting) in mine.iter().enumerate() {
                if let Some(name) = self.copy_crop(id, camera, i, &sighting.thumbnail) {
                    let t = secs(sighting.start.as_ref(), self.t0);
                    write!(
                        h,
                        "<img src=\"{name}\" title=\"{camera} at {t:.1} s, track {}\">",
                        esc(&sighting.track_id)
                    )?;
                }
            }
            h.push_str("</div></div>");
        }
        h.push_str(&self.timeline(s, horizon));
        h.push_str("</div>\n");
        Ok(())
    }

    /// An SVG with one row per camera and a bar per tracklet.
    fn timeline(&self, s: &Seen, horizon: f64) -> String {
        let (width, row, left) = (900.0, 18.0, 50.0);
        let x = |t: f64| left + (t.max(0.0) / horizon) * (width - left - 10.0);
        let mut svg = format!(
            "<svg width=\"{width}\" height=\"{}\" style=\"display:block\">",
            row * self.cameras.len() as f64 + 16.0
        );
        for (i, (camera, _, _)) in self.cameras.iter().enumerate() {
            let y = row * i as f64;
            let _ = write!(svg, "<text x=\"0\" y=\"{}\" font-size=\"12\">{camera}</text>", y + 13.0);
            let _ = write!(
                svg,
                "<line x1=\"{left}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"#ddd\"/>",
                width - 10.0,
                y + 9.0,
                y + 9.0
            );
            for sighting in s.on(camera) {
                let (a, b) = (x(secs(sighting.start.as_ref(), self.t0)), x(secs(sighting.end.as_ref(), self.t0)));
                let color = if i == 0 { "#2b7bb9" } else { "#d9822b" };
                let _ = write!(
                    svg,
                    "<rect x=\"{a:.1}\" y=\"{}\" width=\"{:.1}\" height=\"12\" fill=\"{color}\"/>",
                    y + 3.0,
                    (b - a).max(2.0)
                );
            }
        }
        let y = row * self.cameras.len() as f64 + 12.0;
        for k in 0..=5 {
            let t = horizon * f64::from(k) / 5.0;
            let _ =
                write!(svg, "<text x=\"{:.1}\" y=\"{y}\" font-size=\"10\" fill=\"#666\">{t:.0} s</text>", x(t) - 8.0);
        }
        svg.push_str("</svg>");
        svg
    }

    /// Copies a stored thumbnail into the report; its path there.
    fn copy_crop(&self, identity: &str, camera: &str, i: usize, thumbnail: &str) -> Option<String> {
        if thumbnail.is_empty() {
            return None;
        }
        let from = self.args.data.join("identity").join("crops").join(thumbnail);
        let ext = from.extension().and_then(|e| e.to_str()).unwrap_or("jpg");
        let name = format!("crops/{}_{camera}_{i}.{ext}", short(identity));
        std::fs::copy(&from, self.args.out.join(&name)).ok()?;
        Some(name)
    }

    /// One frame of the video as each camera sees it.
    fn write_views(&self) -> anyhow::Result<()> {
        let mut capture = opencv::videoio::VideoCapture::from_file(&self.args.video, opencv::videoio::CAP_ANY)?;
        capture.set(opencv::videoio::CAP_PROP_POS_FRAMES, 120.0)?;
        let mut image = opencv::core::Mat::default();
        if !capture.read(&mut image)? || image.empty() {
            return Ok(());
        }
        for (id, _, view) in self.cameras {
            let frame =
                reid_ingester::frame::Frame { image: image.clone(), captured_at: SystemTime::now(), sequence: 0 };
            let seen = view.apply(frame, u64::MAX)?;
            opencv::imgcodecs::imwrite(
                self.args.out.join("views").join(format!("{id}.jpg")),
                &seen.image,
                &opencv::core::Vector::new(),
            )?;
        }
        Ok(())
    }

    /// The served model's training plots, copied into the report; their file names.
    fn copy_training(&self) -> anyhow::Result<Vec<String>> {
        let id = self.model.r#ref.as_ref().map(|r| r.id.clone()).unwrap_or_default();
        let dir = self.args.model_dir.join(&id).join("training");
        let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(Vec::new()) };
        let mut names: BTreeMap<String, PathBuf> = BTreeMap::new();
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "png") {
                names.insert(e.file_name().to_string_lossy().into_owned(), p);
            }
        }
        for (name, path) in &names {
            std::fs::copy(path, self.args.out.join("training").join(name))?;
        }
        Ok(names.into_keys().collect())
    }
}
