//! The seed's small CNN: a 28x28 grey image compressed to a low-dimensional embedding (10-d in the
//! classic demonstration). Two 5x5 conv + max-pool stages, then two linear layers.

use tch::Tensor;
use tch::nn::{self, ModuleT};

use crate::{InputSpec, ModelError};

#[derive(Debug)]
pub struct SmallCnn {
    conv1: nn::Conv2D,
    conv2: nn::Conv2D,
    fc1: nn::Linear,
    fc2: nn::Linear,
}

impl SmallCnn {
    pub fn new(p: &nn::Path<'_>, input: InputSpec, embedding_dim: i64) -> Result<Self, ModelError> {
        if !input.width.is_multiple_of(4) || !input.height.is_multiple_of(4) || embedding_dim < 1 {
            return Err(ModelError::UnknownArchitecture(
                "small_cnn takes inputs whose sides are multiples of 4 and a positive dimension".into(),
            ));
        }
        let same = nn::ConvConfig { padding: 2, ..Default::default() };
        let c = input.channels() as i64;
        let flat = 64 * i64::from(input.width / 4) * i64::from(input.height / 4);
        Ok(SmallCnn {
            conv1: nn::conv2d(p / "conv1", c, 32, 5, same),
            conv2: nn::conv2d(p / "conv2", 32, 64, 5, same),
            fc1: nn::linear(p / "fc1", flat, 256, Default::default()),
            fc2: nn::linear(p / "fc2", 256, embedding_dim, Default::default()),
        })
    }
}

impl ModuleT for SmallCnn {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        xs.apply(&self.conv1)
            .relu()
            .max_pool2d_default(2)
            .apply(&self.conv2)
            .relu()
            .max_pool2d_default(2)
            .flatten(1, -1)
            .apply(&self.fc1)
            .relu()
            .apply(&self.fc2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ColorOrder;

    #[test]
    fn compresses_28x28_to_10() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let spec = InputSpec { width: 28, height: 28, color: ColorOrder::Gray };
        let net = SmallCnn::new(&vs.root(), spec, 10).unwrap();
        let out = net.forward_t(&Tensor::zeros([4, 1, 28, 28], (tch::Kind::Float, tch::Device::Cpu)), false);
        assert_eq!(out.size(), vec![4, 10]);
    }

    #[test]
    fn rejects_sizes_it_cannot_pool() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let spec = InputSpec { width: 30, height: 28, color: ColorOrder::Gray };
        assert!(SmallCnn::new(&vs.root(), spec, 10).is_err());
    }
}
