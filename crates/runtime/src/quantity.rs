//! Kubernetes resource quantities (`100m`, `1.5`, `128Mi`, `1e3`, `2G`) as numbers, for
//! components that add requests up and compare them with capacity (scheduler, kubelet).

/// The quantity in thousandths (millicores for CPU): what CPU arithmetic uses.
pub fn milli_value(text: &str) -> Option<i128> {
    scaled(text, 1000)
}

/// The quantity rounded up to a whole number (bytes for memory, a count for pods).
pub fn value(text: &str) -> Option<i128> {
    let thousandths = scaled(text, 1000)?;
    Some(thousandths.div_euclid(1000) + i128::from(thousandths.rem_euclid(1000) != 0))
}

/// `text` times `unit`, rounded up (as Kubernetes rounds quantities up to their precision).
fn scaled(text: &str, unit: i128) -> Option<i128> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let (number, suffix) = split(text);
    let (mantissa, exponent10) = parse_decimal(number)?;
    let (binary_shift, decimal_exponent) = match suffix {
        "" => (0, 0),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        s if s.starts_with(['e', 'E']) => (0, s[1..].parse::<i32>().ok()?),
        _ => return None,
    };
    let mut value = mantissa
        .checked_mul(unit)?
        .checked_mul(1i128.checked_shl(binary_shift)?)?;
    let exponent = exponent10 + decimal_exponent;
    if exponent >= 0 {
        value = value.checked_mul(10i128.checked_pow(exponent as u32)?)?;
    } else {
        let divisor = 10i128.checked_pow(exponent.unsigned_abs())?;
        value = value.div_euclid(divisor) + i128::from(value.rem_euclid(divisor) != 0);
    }
    Some(value)
}

/// The numeric part and the suffix.
fn split(text: &str) -> (&str, &str) {
    let end = text
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || *c == '.' || ((*c == '+' || *c == '-') && *i == 0)))
        .map_or(text.len(), |(i, _)| i);
    (&text[..end], &text[end..])
}

/// `1.25` → (125, -2).
fn parse_decimal(number: &str) -> Option<(i128, i32)> {
    let (negative, digits) = match number.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, number.strip_prefix('+').unwrap_or(number)),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let all: String = format!("{whole}{fraction}");
    let mut mantissa: i128 = if all.is_empty() { 0 } else { all.parse().ok()? };
    if negative {
        mantissa = -mantissa;
    }
    Some((mantissa, -(fraction.len() as i32)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_in_millicores() {
        assert_eq!(milli_value("100m"), Some(100));
        assert_eq!(milli_value("1"), Some(1000));
        assert_eq!(milli_value("1.5"), Some(1500));
        assert_eq!(milli_value("0.1"), Some(100));
        assert_eq!(milli_value("32"), Some(32_000));
        assert_eq!(milli_value("250u"), Some(1), "rounded up");
    }

    #[test]
    fn memory_in_bytes() {
        assert_eq!(value("128Mi"), Some(128 << 20));
        assert_eq!(value("1Gi"), Some(1 << 30));
        assert_eq!(value("1G"), Some(1_000_000_000));
        assert_eq!(value("1e3"), Some(1000));
        assert_eq!(value("1.5Ki"), Some(1536));
        assert_eq!(value("110"), Some(110));
        assert_eq!(value("100m"), Some(1), "rounded up");
    }

    #[test]
    fn nonsense_is_refused() {
        for bad in ["", "abc", "1Xi", "--1", "."] {
            assert_eq!(value(bad), None, "{bad}");
        }
    }
}
