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

pub struct Adam {
    config: AdamConfig,
    params: Vec<(String, Tensor)>,
    m: BTreeMap<String, Tensor>,
    v: BTreeMap<String, Tensor>,
    step: i64,
}

impl std::fmt::Debug for Adam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adam").field("config", &self.config).field("step", &self.step).finish()
    }
}

impl Adam {
    /// Optimises `params` (name, trainable tensor), e.g. a var store's trainable variables.
    pub fn new(params: Vec<(String, Tensor)>, config: AdamConfig) -> Self {
        let zeros = |params: &[(String, Tensor)]| params.iter().map(|(n, t)| (n.clone(), t.zeros_like())).collect();
        Adam { m: zeros(&params), v: zeros(&params), params, config, step: 0 }
    }

    pub fn step_count(&self) -> i64 {
        self.step
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    pub fn zero_grad(&mut self) {
        for (_, p) in &mut self.params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.detach_().zero_();
            }
        }
    }

    pub fn step(&mut self) {
        self.step += 1;
        let c = self.config;
        let bias1 = 1.0 - c.beta1.powi(self.step as i32);
        let bias2 = 1.0 - c.beta2.powi(self.step as i32);
        tch::no_grad(|| {
            for (name, p) in &mut self.params {
                let mut g = p.grad();
                if !g.defined() {
                    continue;
                }
                if c.weight_decay != 0.0 {
                    g = &g + &*p * c.weight_decay;
                }
                let (Some(m), Some(v)) = (self.m.get_mut(name.as_str()), self.v.get_mut(name.as_str())) else {
                    continue;
                };
                let _ = m.g_mul_scalar_(c.beta1).g_add_(&(&g * (1.0 - c.beta1)));
                let _ = v.g_mul_scalar_(c.beta2).g_add_(&(&g * &g * (1.0 - c.beta2)));
                let denom = (&*v / bias2).sqrt() + c.eps;
                let update = &*m / &denom * (c.lr / bias1);
                let _ = p.g_sub_(&update);
            }
        });
    }

    /// Writes the moments to `path` (safetensors); the step is returned for the caller's state.
    pub fn save(&self, path: &Path) -> Result<i64, TrainError> {
        let tensors: Vec<(String, Tensor)> = self
            .m
            .iter()
            .map(|(n, t)| (format!("m.{n}"), t.shallow_clone()))
            .chain(self.v.iter().map(|(n, t)| (format!("v.{n}"), t.shallow_clone())))
            .collect();
        Tensor::write_safetensors(&tensors, path)?;
        Ok(self.step)
    }

    /// Restores moments saved by [`Adam::save`] and the step count.
    pub fn load(&mut self, path: &Path, step: i64) -> Result<(), TrainError> {
        let saved: BTreeMap<String, Tensor> = Tensor::read_safetensors(path)?.into_iter().collect();
        for (moments, prefix) in [(&mut self.m, "m."), (&mut self.v, "v.")] {
            for (name, t) in moments.iter_mut() {
                let src = saved
                    .get(&format!("{prefix}{name}"))
                    .ok_or_else(|| TrainError::Config(format!("optimiser state lacks {prefix}{name}")))?;
                tch::no_grad(|| t.copy_(&src.to_kind(Kind::Float)));
            }
        }
        self.step = step;
        Ok(())
    }

    /// The moments, for tests and checks.
    pub fn moments(&self) -> (&BTreeMap<String, Tensor>, &BTreeMap<String, Tensor>) {
        (&self.m, &self.v)
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
