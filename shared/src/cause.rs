//! Error messages with their causes. Many library errors display only their own layer
//! (`tokio_postgres::Error` says just "db error"), so a log line or an HTTP answer built from
//! `to_string()` loses the reason. `Chain` walks `source()` and prints every layer.

use std::error::Error;
use std::fmt;

/// Displays an error and each of its sources: `db error: ERROR: duplicate key value ...`.
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut last = self.0.to_string();
        let mut source = self.0.source();
        while let Some(cause) = source {
            let text = cause.to_string();
            // Some wrappers repeat their source's text in their own; print it once.
            if !last.contains(&text) {
                write!(f, ": {text}")?;
            }
            last = text;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Chain;

    #[derive(Debug, thiserror::Error)]
    #[error("db error")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn prints_every_cause() {
        let e = Outer(std::io::Error::other(
            "duplicate key value violates unique constraint",
        ));
        assert_eq!(
            Chain(&e).to_string(),
            "db error: duplicate key value violates unique constraint"
        );
    }
}
