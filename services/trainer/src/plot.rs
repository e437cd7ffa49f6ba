//! Plots as PNG, drawn with OpenCV (no plotting stack to install): line charts and a 2-D PCA
//! scatter of an embedding space coloured by identity. A run's own plots (loss, active triplets,
//! CMC) are made from its history in `train/files.rs`.

use std::path::Path;

use opencv::core::{Mat, Point, Scalar, Vector};
use opencv::imgproc::{self, FONT_HERSHEY_SIMPLEX, LINE_AA};
use tch::{Kind, Tensor};

use crate::error::TrainError;

const W: i32 = 640;
const H: i32 = 420;
const LEFT: i32 = 70;
const RIGHT: i32 = 20;
const TOP: i32 = 40;
const BOTTOM: i32 = 50;

/// Points of a 2-D projection and their identities.
#[derive(Debug, Clone, Default)]
pub struct Scatter {
    /// x0, y0, x1, y1, ...
    pub points: Vec<f32>,
    pub labels: Vec<i64>,
}

/// Projects rows of `x` (`[n, d]`) on their two principal components.
pub fn pca2(x: &Tensor) -> Tensor {
    let x = x.to_kind(Kind::Float);
    if x.size()[0] < 2 || x.size()[1] < 2 {
        return Tensor::zeros([x.size()[0], 2], (Kind::Float, x.device()));
    }
    let centred = &x - x.mean_dim([0i64].as_slice(), true, Kind::Float);
    let (_, _, v) = centred.svd(true, true);
    centred.matmul(&v.narrow(1, 0, 2))
}

/// A line series: its name, colour (BGR) and (x, y) points.
pub struct Series<'a> {
    pub name: &'a str,
    pub color: Scalar,
    pub points: Vec<(f64, f64)>,
}

pub fn palette(i: usize) -> Scalar {
    const COLORS: [(f64, f64, f64); 10] = [
        (180.0, 119.0, 31.0),
        (14.0, 127.0, 255.0),
        (44.0, 160.0, 44.0),
        (40.0, 39.0, 214.0),
        (189.0, 103.0, 148.0),
        (75.0, 86.0, 140.0),
        (194.0, 119.0, 227.0),
        (127.0, 127.0, 127.0),
        (34.0, 189.0, 188.0),
        (207.0, 190.0, 23.0),
    ];
    let (b, g, r) = COLORS[i % COLORS.len()];
    Scalar::new(b, g, r, 0.0)
}

struct Canvas {
    img: Mat,
    x: (f64, f64),
    y: (f64, f64),
}

impl Canvas {
    fn new(title: &str, xlabel: &str, ylabel: &str, x: (f64, f64), y: (f64, f64)) -> Result<Canvas, TrainError> {
        let img = Mat::new_rows_cols_with_default(H, W, opencv::core::CV_8UC3, Scalar::all(255.0)).map_err(cv)?;
        let mut c = Canvas { img, x: widen(x), y: widen(y) };
        c.text(title, Point::new(LEFT, 25), 0.6)?;
        c.text(xlabel, Point::new(W / 2 - 40, H - 12), 0.5)?;
        c.text(ylabel, Point::new(5, TOP - 8), 0.45)?;
        let black = Scalar::all(0.0);
        imgproc::rectangle_points(
            &mut c.img,
            Point::new(LEFT, TOP),
            Point::new(W - RIGHT, H - BOTTOM),
            black,
            1,
            LINE_AA,
            0,
        )
        .map_err(cv)?;
        for i in 0..=4 {
            let fx = c.x.0 + (c.x.1 - c.x.0) * f64::from(i) / 4.0;
            let fy = c.y.0 + (c.y.1 - c.y.0) * f64::from(i) / 4.0;
            let px = c.px(fx, c.y.0);
            c.text(&tick(fx), Point::new(px.x - 12, H - BOTTOM + 18), 0.4)?;
            let py = c.px(c.x.0, fy);
            c.text(&tick(fy), Point::new(8, py.y + 4), 0.4)?;
        }
        Ok(c)
    }

    fn px(&self, x: f64, y: f64) -> Point {
        let fx = (x - self.x.0) / (self.x.1 - self.x.0);
        let fy = (y - self.y.0) / (self.y.1 - self.y.0);
        Point::new(
            LEFT + (fx * f64::from(W - LEFT - RIGHT)) as i32,
            H - BOTTOM - (fy * f64::from(H - TOP - BOTTOM)) as i32,
        )
    }

    fn text(&mut self, s: &str, at: Point, scale: f64) -> Result<(), TrainError> {
        imgproc::put_text(&mut self.img, s, at, FONT_HERSHEY_SIMPLEX, scale, Scalar::all(20.0), 1, LINE_AA, false)
            .map_err(cv)
    }

    fn series(&mut self, series: &[Series<'_>]) -> Result<(), TrainError> {
        for (i, s) in series.iter().enumerate() {
            let pts: Vector<Point> = s.points.iter().map(|(x, y)| self.px(*x, *y)).collect();
            let mut lines = Vector::<Vector<Point>>::new();
            lines.push(pts.clone());
            imgproc::polylines(&mut self.img, &lines, false, s.color, 2, LINE_AA, 0).map_err(cv)?;
            for p in pts.iter() {
                imgproc::circle(&mut self.img, p, 3, s.color, -1, LINE_AA, 0).map_err(cv)?;
            }
            let y = TOP + 18 + 18 * i as i32;
            imgproc::line(
                &mut self.img,
                Point::new(W - RIGHT - 170, y - 4),
                Point::new(W - RIGHT - 150, y - 4),
                s.color,
                2,
                LINE_AA,
                0,
            )
            .map_err(cv)?;
            self.text(s.name, Point::new(W - RIGHT - 145, y), 0.4)?;
        }
        Ok(())
    }

    fn save(&self, path: &Path) -> Result<(), TrainError> {
        let name = path.to_str().ok_or_else(|| TrainError::Config("plot path is not UTF-8".into()))?;
        opencv::imgcodecs::imwrite(name, &self.img, &Vector::new()).map_err(cv)?;
        Ok(())
    }
}

fn cv(e: opencv::Error) -> TrainError {
    TrainError::Model(reid_model::ModelError::from(e))
}

fn widen((lo, hi): (f64, f64)) -> (f64, f64) {
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    if (hi - lo).abs() < 1e-9 { (lo - 0.5, hi + 0.5) } else { (lo, hi) }
}

fn tick(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.round() { format!("{v:.0}") } else { format!("{v:.2}") }
}

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

/// A line chart of several series.
pub fn lines(
    path: &Path,
    title: &str,
    xlabel: &str,
    ylabel: &str,
    series: &[Series<'_>],
    y: Option<(f64, f64)>,
) -> Result<(), TrainError> {
    let x = range(series.iter().flat_map(|s| s.points.iter().map(|p| p.0)));
    let y = y.unwrap_or_else(|| {
        let (lo, hi) = range(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
        (lo.min(0.0), hi)
    });
    let mut c = Canvas::new(title, xlabel, ylabel, x, y)?;
    c.series(series)?;
    c.save(path)
}

/// A scatter plot coloured by label.
pub fn scatter(path: &Path, title: &str, scatter: &Scatter) -> Result<(), TrainError> {
    let xs = scatter.points.iter().step_by(2).map(|v| f64::from(*v));
    let ys = scatter.points.iter().skip(1).step_by(2).map(|v| f64::from(*v));
    let mut c = Canvas::new(title, "PC 1", "PC 2", range(xs), range(ys))?;
    let mut classes: Vec<i64> = scatter.labels.clone();
    classes.sort_unstable();
    classes.dedup();
    for (i, label) in scatter.labels.iter().enumerate() {
        let color = palette(classes.binary_search(label).unwrap_or(0));
        let p = c.px(f64::from(scatter.points[2 * i]), f64::from(scatter.points[2 * i + 1]));
        imgproc::circle(&mut c.img, p, 2, color, -1, LINE_AA, 0).map_err(cv)?;
    }
    for (i, label) in classes.iter().take(10).enumerate() {
        let y = TOP + 14 + 16 * i as i32;
        imgproc::circle(&mut c.img, Point::new(W - RIGHT - 70, y - 4), 4, palette(i), -1, LINE_AA, 0).map_err(cv)?;
        c.text(&format!("id {label}"), Point::new(W - RIGHT - 60, y), 0.4)?;
    }
    c.save(path)
}
