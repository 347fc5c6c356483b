//! Where the trainer and the embedder compute: the CPU, or an NVIDIA GPU through candle's CUDA
//! backend when the crate is built with the `cuda` feature.
//!
//! `auto` (the default) takes the first GPU when the binary has CUDA and a GPU answers, else the
//! CPU, so one configuration runs on a laptop and on a GPU node alike. On the CPU the fused
//! kernels run (`train/fused/`, the packed inference encoder); on a GPU the same model is
//! composed from candle's ops, which have CUDA kernels ([`crate::train`]'s `Ops::Portable`).

use std::fmt;
use std::str::FromStr;

use candle_core::Device;
use rag_core::{Error, Result};

/// Which device to compute on, as the configuration and `--device` spell it: `auto`, `cpu`,
/// `cuda` (the first GPU) or `cuda:N`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The first CUDA GPU when this build has CUDA and one is visible, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA GPU number `N` (an error when it cannot be opened).
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "device `{s}`: expected `auto`, `cpu`, `cuda` or `cuda:N`"
                    ))
                }),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl serde::Serialize for DeviceChoice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DeviceChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Whether this build has candle's CUDA backend (the `cuda` feature).
pub fn cuda_compiled() -> bool {
    cfg!(feature = "cuda")
}

impl DeviceChoice {
    /// Opens the device. `Auto` falls back to the CPU (saying why at debug level); an explicit
    /// `cuda:N` that cannot be opened is an error naming the reason and what to do.
    pub fn resolve(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Auto => match open_cuda(0) {
                Ok(device) => Ok(device),
                Err(why) => {
                    tracing::debug!("device auto: the CPU ({why})");
                    Ok(Device::Cpu)
                }
            },
            Self::Cuda(n) => open_cuda(n).map_err(Error::invalid),
        }
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(n: usize) -> std::result::Result<Device, String> {
    Device::new_cuda(n).map_err(|e| {
        format!(
            "cuda:{n} cannot be opened ({e}): is the NVIDIA driver installed and the GPU \
             visible (nvidia-smi, CUDA_VISIBLE_DEVICES)?"
        )
    })
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(n: usize) -> std::result::Result<Device, String> {
    Err(format!(
        "cuda:{n} asked for, but this build has no CUDA: build with `--features cuda` \
         (the CUDA toolkit's nvcc on PATH), or use device `cpu` or `auto`"
    ))
}

/// A short name of a device for logs and reports: `cpu` or `cuda:N`.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse_and_print_back() {
        for (text, choice) in [
            ("auto", DeviceChoice::Auto),
            ("CPU", DeviceChoice::Cpu),
            ("cuda", DeviceChoice::Cuda(0)),
            (" cuda:3 ", DeviceChoice::Cuda(3)),
        ] {
            let parsed: DeviceChoice = text.parse().unwrap();
            assert_eq!(parsed, choice, "{text}");
            assert_eq!(parsed.to_string().parse::<DeviceChoice>().unwrap(), choice);
        }
        for bad in ["", "cuda:", "cuda:x", "tpu", "cuda:-1"] {
            let err = bad.parse::<DeviceChoice>().unwrap_err().to_string();
            assert!(err.contains("cuda:N"), "{bad}: {err}");
        }
    }

    #[test]
    fn auto_and_cpu_always_resolve_and_cuda_says_what_is_missing() {
        assert!(DeviceChoice::Cpu.resolve().unwrap().is_cpu());
        let auto = DeviceChoice::Auto.resolve().unwrap();
        if !cuda_compiled() {
            assert!(auto.is_cpu());
            let err = DeviceChoice::Cuda(0).resolve().unwrap_err();
            assert!(matches!(err, Error::InvalidInput { .. }), "{err:?}");
            assert!(err.to_string().contains("--features cuda"), "{err}");
        }
        assert_eq!(device_name(&Device::Cpu), "cpu");
    }

    #[test]
    fn configuration_strings_round_trip() {
        let c: DeviceChoice = serde_json::from_str("\"cuda:1\"").unwrap();
        assert_eq!(c, DeviceChoice::Cuda(1));
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"cuda:1\"");
        let err = serde_json::from_str::<DeviceChoice>("\"npu\"").unwrap_err();
        assert!(err.to_string().contains("cuda:N"), "{err}");
    }
}
