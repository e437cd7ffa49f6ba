//! The standard re-ID training augmentations, applied to a normalised `[n, c, h, w]` batch:
//! horizontal flip, pad-and-crop, colour jitter and random erasing (Zhong et al., 2020); and the
//! changes from one camera to another that a deployment's own footage never shows a model
//! trained on one camera: white balance (a gain per channel), a brightness offset, defocus blur
//! and a lower resolution (a person farther away or a cheaper sensor). The camera changes act on
//! the pixel values, undoing the normalisation first.

use rand::Rng;
use rand::rngs::StdRng;
use reid_model::Normalization;
use serde::{Deserialize, Serialize};
use tch::Tensor;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Augment {
    /// Flip each image left-right with probability 0.5.
    pub flip: bool,
    /// Pad by this many pixels (zeros, i.e. the mean after normalisation), then crop back at a
    /// random offset.
    pub pad_crop: i64,
    /// Probability of erasing one random rectangle (2-40% of the area, aspect 0.3-3.3).
    pub erasing: f64,
    /// Brightness and contrast jitter strength (0: off): factors drawn from `[1 - s, 1 + s]`.
    pub color_jitter: f64,
    /// White balance: each channel's pixels times its own factor from `[1 - g, 1 + g]`.
    pub channel_gain: f64,
    /// A brightness offset from `[-b, b]`, in the pixel range (1 = full scale).
    pub brightness: f64,
    /// Probability of a Gaussian blur, sigma 0.5-1.5 pixels of the model's input.
    pub blur: f64,
    /// Probability of losing resolution: shrunk to 35-100% of the input size (antialiased), then
    /// scaled back up.
    pub downscale: f64,
}

/// Per-channel mean and standard deviation of the normalisation, to reach pixel values.
#[derive(Debug, Clone, Copy)]
pub struct PixelScale<'a> {
    pub mean: &'a [f32],
    pub std: &'a [f32],
}

impl<'a> PixelScale<'a> {
    pub fn of(norm: &'a Normalization) -> Option<Self> {
        match norm {
            Normalization::MeanStd { mean, std } => Some(PixelScale { mean, std }),
            Normalization::PerImage => None,
        }
    }

    fn column(values: &[f32], channels: i64, like: &Tensor) -> Tensor {
        let v: Vec<f32> = (0..channels as usize).map(|c| values[c.min(values.len() - 1)]).collect();
        Tensor::from_slice(&v).view([channels, 1, 1]).to_device(like.device())
    }

    fn pixels_of(self, img: &Tensor) -> Tensor {
        let c = img.size()[0];
        img * Self::column(self.std, c, img) + Self::column(self.mean, c, img)
    }

    fn normalised(self, img: &Tensor) -> Tensor {
        let c = img.size()[0];
        (img - Self::column(self.mean, c, img)) / Self::column(self.std, c, img)
    }
}

impl Augment {
    pub fn is_off(&self) -> bool {
        !self.flip && self.pad_crop == 0 && self.erasing == 0.0 && self.color_jitter == 0.0 && !self.changes_camera()
    }

    fn changes_camera(&self) -> bool {
        self.channel_gain > 0.0 || self.brightness > 0.0 || self.blur > 0.0 || self.downscale > 0.0
    }

    /// `pixels` undoes the batch's normalisation for the camera changes; without it (per-image
    /// normalisation) they are skipped.
    pub fn apply(&self, xs: &Tensor, pixels: Option<PixelScale<'_>>, rng: &mut StdRng) -> Tensor {
        if self.is_off() {
            return xs.shallow_clone();
        }
        let size = xs.size();
        let (n, h, w) = (size[0], size[2], size[3]);
        let padded =
            if self.pad_crop > 0 { xs.constant_pad_nd([self.pad_crop; 4].as_slice()) } else { xs.shallow_clone() };
        let images: Vec<Tensor> = (0..n)
            .map(|i| {
                let mut img = padded.get(i);
                if self.pad_crop > 0 {
                    let (dy, dx) = (rng.gen_range(0..=2 * self.pad_crop), rng.gen_range(0..=2 * self.pad_crop));
                    img = img.narrow(1, dy, h).narrow(2, dx, w);
                }
                if self.flip && rng.gen_bool(0.5) {
                    img = img.flip([2i64].as_slice());
                }
                if let Some(pixels) = pixels.filter(|_| self.changes_camera()) {
                    img = pixels.normalised(&self.camera(&pixels.pixels_of(&img), rng));
                }
                if self.color_jitter > 0.0 {
                    let s = self.color_jitter;
                    let (brightness, contrast) = (rng.gen_range(1.0 - s..=1.0 + s), rng.gen_range(1.0 - s..=1.0 + s));
                    let mean = img.mean(tch::Kind::Float);
                    img = (&img - &mean) * contrast + mean * brightness;
                }
                if self.erasing > 0.0 && rng.gen_bool(self.erasing.clamp(0.0, 1.0)) {
                    img = erase(&img, rng);
                }
                img
            })
            .collect();
        Tensor::stack(&images, 0)
    }
}

impl Augment {
    /// One image `[c, h, w]` in pixel values as another camera might have seen it.
    fn camera(&self, img: &Tensor, rng: &mut StdRng) -> Tensor {
        let size = img.size();
        let (c, h, w) = (size[0], size[1], size[2]);
        let mut img = img.shallow_clone();
        if self.downscale > 0.0 && rng.gen_bool(self.downscale.clamp(0.0, 1.0)) {
            let f = rng.gen_range(0.35..1.0);
            let (sh, sw) = (((h as f64 * f).round() as i64).max(2), ((w as f64 * f).round() as i64).max(2));
            img = img
                .unsqueeze(0)
                .internal_upsample_bilinear2d_aa([sh, sw].as_slice(), false, None, None)
                .upsample_bilinear2d([h, w].as_slice(), false, None, None)
                .squeeze_dim(0);
        }
        if self.blur > 0.0 && rng.gen_bool(self.blur.clamp(0.0, 1.0)) {
            img = gaussian_blur(&img, rng.gen_range(0.5..1.5));
        }
        if self.channel_gain > 0.0 {
            let g = self.channel_gain;
            let gains: Vec<f32> = (0..c).map(|_| rng.gen_range(1.0 - g..=1.0 + g) as f32).collect();
            img = &img * Tensor::from_slice(&gains).view([c, 1, 1]).to_device(img.device());
        }
        if self.brightness > 0.0 {
            img = &img + rng.gen_range(-self.brightness..=self.brightness);
        }
        img.clamp(0.0, 1.0)
    }
}

/// A separable Gaussian blur of `[c, h, w]`, edges replicated.
fn gaussian_blur(img: &Tensor, sigma: f64) -> Tensor {
    let radius = (2.0 * sigma).ceil() as i64;
    let taps: Vec<f32> = (-radius..=radius).map(|x| (-((x * x) as f64) / (2.0 * sigma * sigma)).exp() as f32).collect();
    let sum: f32 = taps.iter().sum();
    let taps: Vec<f32> = taps.iter().map(|t| t / sum).collect();
    let c = img.size()[0];
    let k = Tensor::from_slice(&taps).to_device(img.device());
    let (n, r) = (taps.len() as i64, radius);
    let horizontal = k.view([1, 1, 1, n]).repeat([c, 1, 1, 1]);
    let vertical = k.view([1, 1, n, 1]).repeat([c, 1, 1, 1]);
    let padded = img.unsqueeze(0).replication_pad2d([r, r, r, r].as_slice());
    let none: Option<Tensor> = None;
    padded
        .conv2d(&horizontal, none.as_ref(), [1, 1].as_slice(), [0, 0].as_slice(), [1, 1].as_slice(), c)
        .conv2d(&vertical, none.as_ref(), [1, 1].as_slice(), [0, 0].as_slice(), [1, 1].as_slice(), c)
        .squeeze_dim(0)
}

fn erase(img: &Tensor, rng: &mut StdRng) -> Tensor {
    let size = img.size();
    let (h, w) = (size[1] as f64, size[2] as f64);
    for _ in 0..10 {
        let area = rng.gen_range(0.02..0.4) * h * w;
        let aspect = rng.gen_range(0.3f64.ln()..3.3f64.ln()).exp();
        let (eh, ew) = ((area * aspect).sqrt().round() as i64, (area / aspect).sqrt().round() as i64);
        if eh < 1 || ew < 1 || eh >= size[1] || ew >= size[2] {
            continue;
        }
        let (y, x) = (rng.gen_range(0..size[1] - eh), rng.gen_range(0..size[2] - ew));
        let out = img.copy();
        let _ = out.narrow(1, y, eh).narrow(2, x, ew).fill_(0.0);
        return out;
    }
    img.shallow_clone()
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn off_is_identity_and_on_keeps_shape() {
        let xs = Tensor::rand([4, 3, 16, 8], (tch::Kind::Float, tch::Device::Cpu));
        let mut rng = StdRng::seed_from_u64(0);
        assert!(Augment::default().apply(&xs, None, &mut rng).equal(&xs));
        let all = Augment {
            flip: true,
            pad_crop: 2,
            erasing: 1.0,
            color_jitter: 0.2,
            channel_gain: 0.3,
            brightness: 0.1,
            blur: 1.0,
            downscale: 1.0,
        };
        let norm = Normalization::MeanStd { mean: vec![0.5; 3], std: vec![0.25; 3] };
        let out = all.apply(&xs, PixelScale::of(&norm), &mut rng);
        assert_eq!(out.size(), xs.size());
        assert!(!out.equal(&xs));
    }

    #[test]
    fn flip_mirrors_columns() {
        let xs = Tensor::from_slice(&[1.0f32, 2.0, 3.0]).view([1, 1, 1, 3]);
        let flip = Augment { flip: true, ..Default::default() };
        // Over a few draws both outcomes occur, and a flip is an exact mirror.
        let mut seen = std::collections::BTreeSet::new();
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..16 {
            let v = Vec::<f32>::try_from(flip.apply(&xs, None, &mut rng).flatten(0, -1)).unwrap();
            assert!(v == [1.0, 2.0, 3.0] || v == [3.0, 2.0, 1.0], "{v:?}");
            seen.insert(v[0] as i32);
        }
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn erasing_zeroes_a_rectangle() {
        let xs = Tensor::ones([1, 1, 32, 32], (tch::Kind::Float, tch::Device::Cpu));
        let erased = Augment { erasing: 1.0, ..Default::default() }.apply(&xs, None, &mut StdRng::seed_from_u64(2));
        let zeros = erased.eq(0.0).sum(tch::Kind::Int64).int64_value(&[]);
        assert!(zeros >= (0.02 * 1024.0) as i64 && zeros <= (0.4 * 1024.0) as i64 + 32, "{zeros}");
    }

    fn values(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()
    }

    #[test]
    fn camera_changes_act_on_pixel_values() {
        // Mid-grey in pixels is 0 once normalised by mean 0.5: a gain only moves it if applied to
        // pixels, each channel by its own factor, and the offset moves all channels alike.
        let norm = Normalization::MeanStd { mean: vec![0.5, 0.5, 0.5], std: vec![0.25, 0.25, 0.25] };
        let xs = Tensor::zeros([1, 3, 8, 4], (tch::Kind::Float, tch::Device::Cpu));
        let gain = Augment { channel_gain: 0.4, ..Default::default() };
        let mut means = Vec::new();
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..8 {
            let out = gain.apply(&xs, PixelScale::of(&norm), &mut rng).get(0);
            for c in 0..3 {
                let v = values(&out.get(c));
                assert!(v.iter().all(|&x| (x - v[0]).abs() < 1e-6), "one factor per channel");
                let pixel = v[0] * 0.25 + 0.5;
                assert!((0.5 * 0.6 - 1e-5..=0.5 * 1.4 + 1e-5).contains(&pixel), "{pixel}");
                means.push(v[0]);
            }
        }
        assert!(means.iter().any(|&m| m.abs() > 0.05), "the gains moved some channel: {means:?}");
        assert!(means.chunks(3).any(|c| (c[0] - c[1]).abs() > 0.01), "channels get different gains");

        let offset = Augment { brightness: 0.1, ..Default::default() };
        let out = offset.apply(&xs, PixelScale::of(&norm), &mut StdRng::seed_from_u64(4));
        let v = values(&out);
        assert!(v.iter().all(|&x| (x - v[0]).abs() < 1e-6) && v[0].abs() <= 0.1 / 0.25 + 1e-5);
        // Without a pixel scale (per-image normalisation) the camera changes are skipped.
        assert!(gain.apply(&xs, None, &mut rng).equal(&xs));
    }

    #[test]
    fn blur_and_lower_resolution_keep_flat_images_and_soften_edges() {
        let norm = Normalization::MeanStd { mean: vec![0.0], std: vec![1.0] };
        let flat = Tensor::full([1, 1, 16, 8], 0.6, (tch::Kind::Float, tch::Device::Cpu));
        // A vertical edge: left half black, right half white.
        let edge = Tensor::cat(
            &[
                Tensor::zeros([1, 1, 16, 4], (tch::Kind::Float, tch::Device::Cpu)),
                Tensor::ones([1, 1, 16, 4], (tch::Kind::Float, tch::Device::Cpu)),
            ],
            3,
        );
        for aug in [Augment { blur: 1.0, ..Default::default() }, Augment { downscale: 1.0, ..Default::default() }] {
            let mut rng = StdRng::seed_from_u64(5);
            let out = aug.apply(&flat, PixelScale::of(&norm), &mut rng);
            assert!(values(&out).iter().all(|&x| (x - 0.6).abs() < 1e-4), "{aug:?} keeps a flat image");
            let mut softened = false;
            for _ in 0..4 {
                let out = aug.apply(&edge, PixelScale::of(&norm), &mut rng);
                assert_eq!(out.size(), edge.size());
                let row = values(&out.get(0).get(0).get(8));
                assert!(row.iter().all(|&x| (-1e-4..=1.0 + 1e-4).contains(&x)));
                assert!(row.windows(2).all(|w| w[1] >= w[0] - 1e-4), "still a rising edge: {row:?}");
                softened |= row[3] > 0.02 || row[4] < 0.98;
            }
            assert!(softened, "{aug:?} softens the edge");
        }
    }
}
