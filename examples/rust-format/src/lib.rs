pub struct Config{pub port:u16,pub host:String}
impl Config{ pub fn addr(&self)->String{format!("{}:{}",self.host,self.port)} }

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addr_joins_host_and_port() {
        let c = Config { port: 8080, host: "localhost".into() };
        assert_eq!(c.addr(), "localhost:8080");
    }
}
