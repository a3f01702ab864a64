pub fn is_idle(jobs: &[u32]) -> bool {
    jobs.len() == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_when_no_jobs() {
        assert!(is_idle(&[]));
        assert!(!is_idle(&[1]));
    }
}
