//! Devices: `cpu`, `cuda` or `cuda:N` from a config string to a candle device.
//! A leaf: it names no other module of the crate.

use anyhow::{Context, Result, bail};
use candle_core::Device;

/// Where the LLM runs: `cpu`, `cuda` (GPU 0) or `cuda:N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
}

impl DeviceSpec {
    /// Parse `cpu`, `cuda` or `cuda:N` (nothing else, so a typo is an error).
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            anyhow::anyhow!(
                "device {s:?}: expected `cpu`, `cuda` (GPU 0) or `cuda:N` (GPU N, e.g. `cuda:1`)"
            )
        };
        match s {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            _ => {
                let n = s.strip_prefix("cuda:").ok_or_else(bad)?;
                // usize::from_str accepts a leading `+`; only digits are an index here.
                if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                Ok(DeviceSpec::Cuda(n.parse().map_err(|_| bad())?))
            }
        }
    }

    /// The candle device; a CUDA device in a build without CUDA is an error saying so.
    pub fn open(self) -> Result<Device> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(n) => {
                if !candle_core::utils::cuda_is_available() {
                    bail!(
                        "device cuda:{n}: this binary was built without CUDA; rebuild with --features cuda"
                    );
                }
                Device::new_cuda(n).with_context(|| format!("cannot open CUDA device {n}"))
            }
        }
    }
}

/// `cpu`, `cuda` or `cuda:N` → the candle device ([`DeviceSpec`]).
pub fn parse_device(s: &str) -> Result<Device> {
    DeviceSpec::parse(s)?.open()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_strings_parse() {
        assert_eq!(DeviceSpec::parse("cpu").unwrap(), DeviceSpec::Cpu);
        assert_eq!(DeviceSpec::parse("cuda").unwrap(), DeviceSpec::Cuda(0));
        assert_eq!(DeviceSpec::parse("cuda:0").unwrap(), DeviceSpec::Cuda(0));
        assert_eq!(DeviceSpec::parse("cuda:1").unwrap(), DeviceSpec::Cuda(1));
        assert!(parse_device("cpu").unwrap().is_cpu());
        for bad in [
            "", "gpu", "CPU", "cuda:", "cuda:x", "cuda:-1", "cuda:+1", "cuda1", " cpu",
        ] {
            let e = format!("{:#}", DeviceSpec::parse(bad).unwrap_err());
            assert!(e.contains("expected `cpu`, `cuda`"), "{bad:?}: {e}");
            assert!(e.contains(&format!("{bad:?}")), "{bad:?}: {e}");
        }
    }

    #[test]
    fn cuda_without_the_feature_says_how_to_rebuild() {
        if candle_core::utils::cuda_is_available() {
            return;
        }
        for s in ["cuda", "cuda:1"] {
            let e = format!("{:#}", parse_device(s).unwrap_err());
            assert!(
                e.contains("this binary was built without CUDA; rebuild with --features cuda"),
                "{e}"
            );
        }
    }
}
