//! Money: integer cents inside, two-decimal numbers in JSON.

/// Largest price the catalog accepts for one seat, in cents ($1,000,000).
pub const MAX_CENTS: u64 = 100_000_000;

/// Cents from a JSON decimal such as `150.00`: non-negative, at most two decimal
/// places, at most [`MAX_CENTS`].
pub fn cents_from_decimal(value: f64) -> Result<u64, String> {
    if !value.is_finite() || value < 0.0 {
        return Err(format!("{value} is not a non-negative amount"));
    }
    let cents = (value * 100.0).round();
    if (value * 100.0 - cents).abs() > 1e-6 {
        return Err(format!("{value} has more than two decimal places"));
    }
    if cents > MAX_CENTS as f64 {
        return Err(format!(
            "{value} exceeds the maximum of {}",
            MAX_CENTS / 100
        ));
    }
    Ok(cents as u64)
}

/// Cents as a JSON number with the value of `cents / 100` (e.g. 15000 → 150.0).
pub fn decimal_from_cents(cents: u64) -> f64 {
    cents as f64 / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_two_decimal_amounts_exactly() {
        assert_eq!(cents_from_decimal(150.0), Ok(15_000));
        assert_eq!(cents_from_decimal(0.1 + 0.2), Ok(30));
        assert_eq!(cents_from_decimal(19.99), Ok(1_999));
        assert_eq!(decimal_from_cents(1_999), 19.99);
        assert!(cents_from_decimal(1.005).is_err());
        assert!(cents_from_decimal(-1.0).is_err());
        assert!(cents_from_decimal(f64::NAN).is_err());
        assert!(cents_from_decimal(2e6).is_err());
    }
}
