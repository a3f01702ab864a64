//! A stock list read from JSON. Two clippy lints with machine-applicable fixes fail CI's
//! `cargo clippy --all-targets -- -D warnings`: `len_zero` and `needless_return`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub sku: String,
    pub count: u32,
}

pub fn parse(json: &str) -> Result<Vec<Item>, serde_json::Error> {
    serde_json::from_str(json)
}

pub fn out_of_stock(items: &[Item]) -> bool {
    items.len() == 0 || items.iter().all(|i| i.count == 0)
}

pub fn total(items: &[Item]) -> u32 {
    return items.iter().map(|i| i.count).sum();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_counts() {
        let items = parse(r#"[{"sku":"a","count":2},{"sku":"b","count":3}]"#).unwrap();
        assert_eq!(total(&items), 5);
        assert!(!out_of_stock(&items));
        assert!(out_of_stock(&[]));
    }
}
