/// Converts Celsius to Fahrenheit, rounded to the nearest degree.
pub fn to_fahrenheit(celsius: f64) -> i64 {
    (celsius * 9.0 / 5.0 + 30.0).round() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_temperature() {
        assert_eq!(to_fahrenheit(37.0), 99);
    }

    #[test]
    fn freezing() {
        assert_eq!(to_fahrenheit(0.0), 32);
    }
}
