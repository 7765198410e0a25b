//! Kubernetes resource quantities (`16G`, `16Gi`, `1.5e9`, `500m`) read as Kubernetes reads them: `G` is 10^9 and
//! `Gi` 2^30. The CLI's sizes (`--max_index_memory_usage 4G`) follow clip-retrieval and mean GiB, so a pod's memory
//! is converted to exact bytes before it becomes a flag; reading `16G` with the CLI's rules would overstate it by 7%.

/// Bytes (or units) of `text`, a Kubernetes quantity; `what` names the field in the error.
pub fn parse(text: &str, what: &str) -> Result<f64, String> {
    let bad = || {
        format!(
            "{what} {text:?} is not a Kubernetes quantity (a number with an optional suffix: Ki Mi Gi Ti Pi Ei, \
             k M G T P E, m, or an exponent such as 1e9)"
        )
    };
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(t.len());
    let (number, suffix) = t.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let scale = match suffix {
        "" => 1.0,
        "Ki" => 2f64.powi(10),
        "Mi" => 2f64.powi(20),
        "Gi" => 2f64.powi(30),
        "Ti" => 2f64.powi(40),
        "Pi" => 2f64.powi(50),
        "Ei" => 2f64.powi(60),
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        s if s.starts_with(['e', 'E']) => {
            let exponent: i32 = s[1..].parse().map_err(|_| bad())?;
            10f64.powi(exponent)
        }
        _ => return Err(bad()),
    };
    let value = number * scale;
    if !value.is_finite() || value < 0.0 {
        return Err(bad());
    }
    Ok(value)
}

/// Whole bytes of a memory quantity (rounded up, as Kubernetes rounds memory).
pub fn bytes(text: &str, what: &str) -> Result<u64, String> {
    let value = parse(text, what)?;
    if value < 1.0 {
        return Err(format!("{what} {text:?} is less than one byte"));
    }
    Ok(value.ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_mean_what_kubernetes_means() {
        assert_eq!(bytes("16G", "m").unwrap(), 16_000_000_000);
        assert_eq!(bytes("16Gi", "m").unwrap(), 16 << 30);
        assert_eq!(bytes("1.5Gi", "m").unwrap(), 3 << 29);
        assert_eq!(bytes("512Mi", "m").unwrap(), 512 << 20);
        assert_eq!(bytes("128974848", "m").unwrap(), 128_974_848);
        assert_eq!(bytes("129e6", "m").unwrap(), 129_000_000);
        assert_eq!(bytes("128974848000m", "m").unwrap(), 128_974_848);
        assert_eq!(parse("500m", "cpu").unwrap(), 0.5);
        assert_eq!(parse("2", "cpu").unwrap(), 2.0);
        for bad in ["16GB", "lots", "", "1x", "-1Gi", "Gi"] {
            let e = parse(bad, "resources.memory").unwrap_err();
            assert!(e.contains("resources.memory") && e.contains("not a Kubernetes quantity"), "{bad}: {e}");
        }
    }
}
