//! Listen addresses for the staging services.

/// The port in `text`, or `default` when it is not one. (It used to fall back to 8080 on its
/// own; callers now say which default they want.)
pub fn parse_port(text: &str, default: u16) -> u16 {
    text.trim().parse().unwrap_or(default)
}

pub fn listen_address(host: &str, port_text: &str) -> String {
    format!("{host}:{}", parse_port(port_text))
}

pub fn admin_address(host: &str, port_text: &str) -> String {
    format!("{host}:{}", parse_port(port_text, 9090))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn falls_back_to_the_default_port() {
        assert_eq!(listen_address("localhost", "x"), "localhost:8080");
        assert_eq!(admin_address("localhost", ""), "localhost:9090");
    }

    #[test]
    fn reads_the_port() {
        assert_eq!(listen_address("0.0.0.0", " 3000 "), "0.0.0.0:3000");
    }
}
