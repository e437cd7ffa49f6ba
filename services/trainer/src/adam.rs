//! Adam (Kingma & Ba, 2015) with L2 weight decay added to the gradient, as `torch.optim.Adam`, written
//! out so that its state (step, first and second moments) can be checkpointed and restored:
//! tch's optimisers keep theirs inside libtorch.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::TrainError;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

/// The moments live in two flat tensors over all parameters, so that one step is a handful of
/// whole-model operations rather than a dozen small ones per parameter tensor (what
/// `torch.optim.Adam`'s multi-tensor "foreach" path achieves).
pub(crate) struct Adam {
    config: AdamConfig,
    params: Vec<(String, Tensor)>,
    sizes: Vec<i64>,
    m: Tensor,
    v: Tensor,
    step: i64,
}

impl std::fmt::Debug for Adam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adam").field("config", &self.config).field("step", &self.step).finish()
    }
}

impl Adam {
    /// Optimises `params` (name, trainable tensor), e.g. a var store's trainable variables.
    pub(crate) fn new(params: Vec<(String, Tensor)>, config: AdamConfig) -> Self {
        let sizes: Vec<i64> = params.iter().map(|(_, t)| t.numel() as i64).collect();
        let total: i64 = sizes.iter().sum();
        let options = params.first().map_or((Kind::Float, tch::Device::Cpu), |(_, t)| (Kind::Float, t.device()));
        Adam { m: Tensor::zeros([total], options), v: Tensor::zeros([total], options), params, sizes, config, step: 0 }
    }

    #[cfg(test)]
    fn step_count(&self) -> i64 {
        self.step
    }

    pub(crate) fn zero_grad(&mut self) {
        for (_, p) in &mut self.params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.detach_().zero_();
            }
        }
    }

    pub(crate) fn step(&mut self) {
        if self.params.is_empty() {
            return;
        }
        self.step += 1;
        let c = self.config;
        let bias1 = 1.0 - c.beta1.powi(self.step as i32);
        let bias2 = 1.0 - c.beta2.powi(self.step as i32);
        tch::no_grad(|| {
            // A parameter without a gradient this step (not used in the loss) contributes zeros.
            let grads: Vec<Tensor> = self
                .params
                .iter()
                .map(|(_, p)| {
                    let g = p.grad();
                    if g.defined() { g.view([-1i64].as_slice()) } else { p.zeros_like().view([-1i64].as_slice()) }
                })
                .collect();
            let mut g = Tensor::cat(&grads, 0);
            if c.weight_decay != 0.0 {
                let flat: Vec<Tensor> = self.params.iter().map(|(_, p)| p.view([-1i64].as_slice())).collect();
                g += Tensor::cat(&flat, 0) * c.weight_decay;
            }
            let _ = self.m.g_mul_scalar_(c.beta1).g_add_(&(&g * (1.0 - c.beta1)));
            let _ = self.v.g_mul_scalar_(c.beta2).g_add_(&(&g * &g * (1.0 - c.beta2)));
            let update = &self.m / ((&self.v / bias2).sqrt() + c.eps) * (c.lr / bias1);
            for ((_, p), u) in self.params.iter_mut().zip(update.split_with_sizes(self.sizes.as_slice(), 0)) {
                let _ = p.g_sub_(&u.view_as(p));
            }
        });
    }

    /// The moments of each parameter, by name.
    fn per_param(&self, flat: &Tensor) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .zip(flat.split_with_sizes(self.sizes.as_slice(), 0))
            .map(|((n, p), t)| (n.clone(), t.view_as(p)))
            .collect()
    }

    /// Writes the moments to `path` (safetensors, `m.NAME` and `v.NAME`); returns the step count
    /// for the caller's state.
    pub(crate) fn save(&self, path: &Path) -> Result<i64, TrainError> {
        let tensors: Vec<(String, Tensor)> = self
            .per_param(&self.m)
            .into_iter()
            .map(|(n, t)| (format!("m.{n}"), t))
            .chain(self.per_param(&self.v).into_iter().map(|(n, t)| (format!("v.{n}"), t)))
            .collect();
        Tensor::write_safetensors(&tensors, path)?;
        Ok(self.step)
    }

    /// Restores moments saved by [`Adam::save`] and the step count.
    pub(crate) fn load(&mut self, path: &Path, step: i64) -> Result<(), TrainError> {
        let saved: BTreeMap<String, Tensor> = Tensor::read_safetensors(path)?.into_iter().collect();
        for (prefix, flat) in [("m.", &self.m), ("v.", &self.v)] {
            let mut parts = Vec::with_capacity(self.params.len());
            for (name, _) in &self.params {
                let src = saved
                    .get(&format!("{prefix}{name}"))
                    .ok_or_else(|| TrainError::Config(format!("optimiser state lacks {prefix}{name}")))?;
                parts.push(src.to_kind(Kind::Float).view([-1i64].as_slice()));
            }
            let restored = Tensor::cat(&parts, 0).to_device(flat.device());
            if restored.size() != flat.size() {
                return Err(TrainError::Config("optimiser state does not match the model".into()));
            }
            let mut target = flat.shallow_clone();
            tch::no_grad(|| target.copy_(&restored));
        }
        self.step = step;
        Ok(())
    }

    /// The first and second moments, by parameter name (for checks).
    #[cfg(test)]
    fn moments(&self) -> (BTreeMap<String, Tensor>, BTreeMap<String, Tensor>) {
        (self.per_param(&self.m).into_iter().collect(), self.per_param(&self.v).into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_steps_match_torch_optim_adam() {
        // p = torch.tensor([1., -2.], requires_grad=True); opt = torch.optim.Adam([p], lr=0.1,
        // weight_decay=0.01); loss = (p ** 2).sum(), two steps -> p = [0.8004122, -1.8001665].
        let p = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let mut adam = Adam::new(
            vec![("p".into(), p.shallow_clone())],
            AdamConfig { lr: 0.1, weight_decay: 0.01, ..Default::default() },
        );
        for _ in 0..2 {
            adam.zero_grad();
            p.pow_tensor_scalar(2).sum(Kind::Float).backward();
            adam.step();
        }
        let got = Vec::<f32>::try_from(&p.detach()).unwrap();
        assert!((got[0] - 0.800_412_2).abs() < 1e-6 && (got[1] + 1.800_166_5).abs() < 1e-6, "{got:?}");
        assert_eq!(adam.step_count(), 2);
    }

    #[test]
    fn state_round_trips() {
        let p = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let mut adam = Adam::new(vec![("p".into(), p.shallow_clone())], AdamConfig::default());
        p.pow_tensor_scalar(2).sum(Kind::Float).backward();
        adam.step();
        let path = std::env::temp_dir().join(format!("reid-adam-{}.safetensors", std::process::id()));
        let step = adam.save(&path).unwrap();
        let q = Tensor::from_slice(&[0.0f32, 0.0]).set_requires_grad(true);
        let mut restored = Adam::new(vec![("p".into(), q)], AdamConfig::default());
        restored.load(&path, step).unwrap();
        assert_eq!(restored.step_count(), 1);
        assert!(restored.moments().0["p"].equal(&adam.moments().0["p"]));
        assert!(restored.moments().1["p"].equal(&adam.moments().1["p"]));
        std::fs::remove_file(path).unwrap();
    }
}
