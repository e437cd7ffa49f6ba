//! The standard re-ID training augmentations, applied to a normalised `[n, c, h, w]` batch:
//! horizontal flip, pad-and-crop, colour jitter and random erasing (Zhong et al., 2020).

use rand::Rng;
use rand::rngs::StdRng;
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
}

impl Augment {
    pub fn is_off(&self) -> bool {
        !self.flip && self.pad_crop == 0 && self.erasing == 0.0 && self.color_jitter == 0.0
    }

    pub fn apply(&self, xs: &Tensor, rng: &mut StdRng) -> Tensor {
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
        assert!(Augment::default().apply(&xs, &mut rng).equal(&xs));
        let all = Augment { flip: true, pad_crop: 2, erasing: 1.0, color_jitter: 0.2 };
        let out = all.apply(&xs, &mut rng);
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
            let v = Vec::<f32>::try_from(flip.apply(&xs, &mut rng).flatten(0, -1)).unwrap();
            assert!(v == [1.0, 2.0, 3.0] || v == [3.0, 2.0, 1.0], "{v:?}");
            seen.insert(v[0] as i32);
        }
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn erasing_zeroes_a_rectangle() {
        let xs = Tensor::ones([1, 1, 32, 32], (tch::Kind::Float, tch::Device::Cpu));
        let erased = Augment { erasing: 1.0, ..Default::default() }.apply(&xs, &mut StdRng::seed_from_u64(2));
        let zeros = erased.eq(0.0).sum(tch::Kind::Int64).int64_value(&[]);
        assert!(zeros >= (0.02 * 1024.0) as i64 && zeros <= (0.4 * 1024.0) as i64 + 32, "{zeros}");
    }
}
