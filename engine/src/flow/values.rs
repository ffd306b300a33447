//! The flow file's value types and how they read from YAML: scalars kept as text,
//! timeouts (seconds or humantime), CPU and memory quantities in Kubernetes' notation.

use super::*;

/// A YAML scalar (string, number or boolean), kept as the text a container sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scalar(pub String);

impl Serialize for Scalar {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A timeout: whole seconds (`600`, ContainerOps style) or a human duration (`10m`, `500ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout(pub Duration);

impl Serialize for Timeout {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime_serde::re::humantime::format_duration(self.0).to_string())
    }
}

impl<'de> Deserialize<'de> for Timeout {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Timeout, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Timeout;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a positive number of seconds or a duration such as \"10m\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Timeout, E> {
                if v == 0 {
                    return Err(E::custom("a timeout must be positive"));
                }
                Ok(Timeout(Duration::from_secs(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Timeout, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom("a timeout must be positive"))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Timeout, E> {
                let d = humantime_serde::re::humantime::parse_duration(v)
                    .map_err(|e| E::custom(format!("invalid duration {v:?}: {e}")))?;
                if d.is_zero() {
                    return Err(E::custom("a timeout must be positive"));
                }
                Ok(Timeout(d))
            }
        }
        d.deserialize_any(V)
    }
}

/// A CPU limit in millicores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cpu(pub u64);

impl Cpu {
    /// As Docker's `NanoCpus`.
    pub fn nano_cpus(self) -> i64 {
        i64::try_from(self.0.saturating_mul(1_000_000)).unwrap_or(i64::MAX)
    }

    /// As a Kubernetes quantity (`500m`).
    pub fn quantity(self) -> String {
        format!("{}m", self.0)
    }
}

impl Serialize for Cpu {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.quantity())
    }
}

impl<'de> Deserialize<'de> for Cpu {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Cpu, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Cpu;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("CPU cores (0.5) or millicores (\"500m\")")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Cpu, E> {
                self.visit_f64(v as f64)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Cpu, E> {
                self.visit_f64(v as f64)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Cpu, E> {
                let milli = (v * 1000.0).round();
                if !(1.0..=1.0e9).contains(&milli) {
                    return Err(E::custom(format!("CPU limit {v} is out of range")));
                }
                Ok(Cpu(milli as u64))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Cpu, E> {
                let v = v.trim();
                if let Some(m) = v.strip_suffix('m') {
                    let milli: u64 = m
                        .parse()
                        .map_err(|_| E::custom(format!("invalid CPU limit {v:?}")))?;
                    if milli == 0 {
                        return Err(E::custom("a CPU limit must be positive"));
                    }
                    return Ok(Cpu(milli));
                }
                let cores: f64 = v
                    .parse()
                    .map_err(|_| E::custom(format!("invalid CPU limit {v:?}")))?;
                self.visit_f64(cores)
            }
        }
        d.deserialize_any(V)
    }
}

/// A memory limit in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory(pub u64);

impl Memory {
    pub fn bytes(self) -> i64 {
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }
}

impl Serialize for Memory {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

/// Parses `64Mi`, `1G`, `512k`, `1048576`.
pub fn parse_memory(v: &str) -> Option<u64> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mul: u64 = match unit {
        "" | "b" | "B" => 1,
        "k" | "K" | "kb" | "KB" => 1_000,
        "Ki" => 1 << 10,
        "M" | "m" | "mb" | "MB" => 1_000_000,
        "Mi" => 1 << 20,
        "G" | "g" | "gb" | "GB" => 1_000_000_000,
        "Gi" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mul)
}

impl<'de> Deserialize<'de> for Memory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Memory, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Memory;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("bytes or a size such as \"64Mi\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Memory, E> {
                // Docker refuses limits under 6 MB; say so here rather than at run time.
                if v < 6 * 1024 * 1024 {
                    return Err(E::custom(format!(
                        "memory limit {v} bytes is below Docker's minimum of 6MiB"
                    )));
                }
                Ok(Memory(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Memory, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom("a memory limit must be positive"))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Memory, E> {
                let bytes =
                    parse_memory(v).ok_or_else(|| E::custom(format!("invalid memory {v:?}")))?;
                self.visit_u64(bytes)
            }
        }
        d.deserialize_any(V)
    }
}
