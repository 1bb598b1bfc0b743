//! Numbers with units: byte sizes and durations as the node's flags take them, and
//! Kubernetes quantities as the API server writes them. One grammar (a number, then a
//! unit) with three unit tables, so the node, the operator and the test kubelet read
//! the same text the same way, and every bad input is an error, never a default.
//!
//! - [`parse_bytes`]: `--max-memory` and friends, `spec.maxMemory`. `64MiB`, `512Mi`,
//!   `10MB`, `1048576`. Units are case-insensitive; `K`, `M`, `G`, `T` (alone, or with
//!   `i` or `iB`) are powers of 1024, `KB`, `MB`, `GB`, `TB` powers of 1000.
//! - [`parse_duration`]: `250ms`, `30s` (or `30`), `5m`, `1h`, `1d`.
//! - [`Quantity`]: `resources.limits.memory` and other Kubernetes quantities. `512Mi`,
//!   `1.5Gi`, `1G`, `2e9`, `1500m`. Case-sensitive, as Kubernetes is: `M` is 10^6 and
//!   `m` is 10^-3. Kept exact (never floating point), like the API server keeps it.
//!
//! The two byte grammars disagree on purpose about `1M` (a MiB for the node's flags,
//! 10^6 for Kubernetes): the text's origin decides which applies, and neither is
//! guessed from the other.

use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("'{0}' is not a byte size (e.g. 64MiB, 1GiB, 1048576)")]
    NotBytes(String),
    #[error("'{0}' is not a duration (e.g. 30s, 5m, 1h)")]
    NotDuration(String),
    #[error("'{0}' is not a Kubernetes quantity (e.g. 512Mi, 1.5Gi, 1G, 2e9)")]
    NotQuantity(String),
    #[error("unknown unit '{unit}' in '{text}' (use {expected})")]
    UnknownUnit {
        unit: String,
        text: String,
        expected: &'static str,
    },
    #[error("'{0}' is too large")]
    TooLarge(String),
}

/// Splits `text` where the number ends: before the first character `in_number` refuses.
fn split_number(text: &str, in_number: impl Fn(char) -> bool) -> (&str, &str) {
    let end = text.find(|c: char| !in_number(c)).unwrap_or(text.len());
    text.split_at(end)
}

/// Parses a byte size: a plain number, or one with a unit. Binary units (KiB, MiB,
/// GiB, TiB, the Kubernetes forms Ki, Mi, Gi, Ti, and K, M, G, T) are powers of 1024;
/// decimal units (KB, MB, GB, TB) are powers of 1000.
pub fn parse_bytes(text: &str) -> Result<usize, UnitError> {
    let text = text.trim();
    let (digits, unit) = split_number(text, |c| c.is_ascii_digit());
    if digits.is_empty() {
        return Err(UnitError::NotBytes(text.to_owned()));
    }
    let too_large = || UnitError::TooLarge(text.to_owned());
    let number: u64 = digits.parse().map_err(|_| too_large())?;
    let unit = unit.trim();
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "ki" | "kib" => 1 << 10,
        "m" | "mi" | "mib" => 1 << 20,
        "g" | "gi" | "gib" => 1 << 30,
        "t" | "ti" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(UnitError::UnknownUnit {
                unit: unit.to_owned(),
                text: text.to_owned(),
                expected: "B, KiB, MiB, GiB, KB, MB or GB",
            });
        }
    };
    number
        .checked_mul(multiplier)
        .and_then(|bytes| usize::try_from(bytes).ok())
        .ok_or_else(too_large)
}

/// Parses a duration: seconds as a plain number, or with a unit (ms, s, m, h, d).
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let text = text.trim();
    let (digits, unit) = split_number(text, |c| c.is_ascii_digit());
    let number: u64 = digits
        .parse()
        .map_err(|_| UnitError::NotDuration(text.to_owned()))?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => {
            return Err(UnitError::UnknownUnit {
                unit: other.to_owned(),
                text: text.to_owned(),
                expected: "ms, s, m, h or d",
            });
        }
    };
    number
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| UnitError::TooLarge(text.to_owned()))
}

/// A Kubernetes quantity (`resource.Quantity`), exactly:
/// `±mantissa × 10^exp10 × 1024^pow1024`.
///
/// The grammar is the API server's: a signed decimal number (`1`, `1.5`, `.5`, `5.`)
/// and a suffix, one of `n u m "" k M G T P E`, `Ki Mi Gi Ti Pi Ei`, or an exponent
/// `e<n>`/`E<n>` (`E` alone is exa).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    negative: bool,
    mantissa: u128,
    exp10: i32,
    pow1024: u8,
}

impl FromStr for Quantity {
    type Err = UnitError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let bad = || UnitError::NotQuantity(text.to_owned());
        let (negative, unsigned) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text.strip_prefix('+').unwrap_or(text)),
        };
        let (number, suffix) = split_number(unsigned, |c| c.is_ascii_digit() || c == '.');
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.len() + fraction.len() == 0 || fraction.contains('.') {
            return Err(bad());
        }
        let mut mantissa: u128 = 0;
        for digit in whole.bytes().chain(fraction.bytes()) {
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(u128::from(digit - b'0')))
                .ok_or_else(|| UnitError::TooLarge(text.to_owned()))?;
        }
        let fraction_digits = i32::try_from(fraction.len()).map_err(|_| bad())?;
        let (suffix_exp10, pow1024) = match suffix {
            "n" => (-9, 0),
            "u" => (-6, 0),
            "m" => (-3, 0),
            "" => (0, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            "Ki" => (0, 1),
            "Mi" => (0, 2),
            "Gi" => (0, 3),
            "Ti" => (0, 4),
            "Pi" => (0, 5),
            "Ei" => (0, 6),
            exponent => {
                let digits = exponent.strip_prefix(['e', 'E']).ok_or_else(bad)?;
                let unsigned = digits.strip_prefix(['+', '-']).unwrap_or(digits);
                if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                (digits.parse::<i32>().map_err(|_| bad())?, 0)
            }
        };
        let exp10 = suffix_exp10.checked_sub(fraction_digits).ok_or_else(bad)?;
        Ok(Self {
            negative,
            mantissa,
            exp10,
            pow1024,
        })
    }
}

impl Quantity {
    /// The value as a whole number, rounded up as Kubernetes rounds a quantity's value
    /// (`1.5` is 2, `100m` is 1); None when negative or beyond `u64`.
    pub fn ceil_u64(self) -> Option<u64> {
        if self.mantissa == 0 {
            return Some(0);
        }
        if self.negative {
            return None;
        }
        let scaled = 1024u128
            .checked_pow(u32::from(self.pow1024))
            .and_then(|binary| self.mantissa.checked_mul(binary))?;
        let value = if self.exp10 >= 0 {
            10u128
                .checked_pow(self.exp10.unsigned_abs())
                .and_then(|decimal| scaled.checked_mul(decimal))?
        } else {
            match 10u128.checked_pow(self.exp10.unsigned_abs()) {
                Some(divisor) => scaled / divisor + u128::from(scaled % divisor != 0),
                // A divisor beyond u128 is larger than any mantissa: a positive value
                // below one, which rounds up to one.
                None => 1,
            }
        };
        u64::try_from(value).ok()
    }

    /// The value as a float, for arithmetic that tolerates rounding (the downward API
    /// divides resources by a divisor).
    pub fn to_f64(self) -> f64 {
        let mut value = self.mantissa as f64 * 1024f64.powi(i32::from(self.pow1024));
        // Dividing by an exact power of ten, rather than multiplying by an inexact
        // negative one, keeps `1500m` exactly 1.5.
        let decimal = 10f64.powi(self.exp10.saturating_abs());
        if self.exp10 >= 0 {
            value *= decimal;
        } else {
            value /= decimal;
        }
        if self.negative { -value } else { value }
    }
}

#[cfg(test)]
mod tests;
