//! Where a model runs: `auto` picks CUDA when libtorch sees a GPU and the CPU otherwise.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ModelError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DevicePreference {
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
}

impl DevicePreference {
    /// The tch device this preference resolves to on this machine.
    pub fn resolve(self) -> Result<tch::Device, ModelError> {
        match self {
            DevicePreference::Auto => Ok(tch::Device::cuda_if_available()),
            DevicePreference::Cpu => Ok(tch::Device::Cpu),
            DevicePreference::Cuda(i) if tch::Cuda::is_available() && i < tch::Cuda::device_count() as usize => {
                Ok(tch::Device::Cuda(i))
            }
            DevicePreference::Cuda(i) => Err(ModelError::DeviceUnavailable(format!("cuda:{i}"))),
        }
    }
}

/// `cpu`, `cuda:0`: how devices are named in logs, metrics and `ModelInfo.device`.
pub fn device_name(device: tch::Device) -> String {
    match device {
        tch::Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".to_owned(),
    }
}

impl FromStr for DevicePreference {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|i| i.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| format!("unknown device {other:?}: use auto, cpu, cuda or cuda:N")),
        }
    }
}

impl TryFrom<String> for DevicePreference {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for DevicePreference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl From<DevicePreference> for String {
    fn from(d: DevicePreference) -> String {
        d.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!("auto".parse(), Ok(DevicePreference::Auto));
        assert_eq!("cuda".parse(), Ok(DevicePreference::Cuda(0)));
        assert_eq!("cuda:2".parse(), Ok(DevicePreference::Cuda(2)));
        assert!("gpu".parse::<DevicePreference>().is_err());
        assert_eq!(DevicePreference::Cuda(1).to_string(), "cuda:1");
    }
}
