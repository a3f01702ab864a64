//! A Postgres server and a Redis of a test's own (the same Debian binaries scripts/services.sh
//! starts, throwaway data under the test's temporary directory), for tests that crash and
//! restart them: the shared ones must stay up for every other test running beside it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port nothing listens on now (the OS's pick, released at once: a small race, acceptable
/// in tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn pg_bin() -> PathBuf {
    std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL from Debian's packages (run scripts/services.sh up)")
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .find(|b| b.join("initdb").exists())
        .expect("initdb under /usr/lib/postgresql/*/bin")
}

fn as_postgres(cmd: &str) -> bool {
    Command::new("su")
        .args(["postgres", "-s", "/bin/sh", "-c", cmd])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(Instant::now() < deadline, "{what} did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn accepts(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

pub struct OwnPostgres {
    data: PathBuf,
    bin: PathBuf,
    pub port: u16,
    /// More `-c name=value` settings for the server.
    options: String,
}

impl OwnPostgres {
    /// initdb into `dir` and start it on a free port.
    pub fn start(dir: &Path) -> OwnPostgres {
        let bin = pg_bin();
        let data = dir.join("pg");
        std::fs::create_dir_all(&data).unwrap();
        assert!(
            Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir)
                .status()
                .unwrap()
                .success(),
            "chown {} to postgres (scripts/services.sh creates the user)",
            dir.display()
        );
        assert!(
            as_postgres(&format!(
                "{}/initdb -D '{}' -U postgres --auth=trust -E UTF8",
                bin.display(),
                data.display()
            )),
            "initdb {}",
            data.display()
        );
        let pg = OwnPostgres {
            data,
            bin,
            port: free_port(),
            options: String::new(),
        };
        pg.start_again();
        pg
    }

    /// Like [`start`](Self::start), serving TLS with `cert` and `key` (PEM) and refusing
    /// connections that are not TLS (`hostssl` only).
    pub fn start_tls(dir: &Path, cert: &Path, key: &Path) -> OwnPostgres {
        let mut pg = OwnPostgres::start(dir);
        pg.crash();
        for (from, to) in [(cert, "server.crt"), (key, "server.key")] {
            std::fs::copy(from, pg.data.join(to)).unwrap();
        }
        std::fs::write(
            pg.data.join("pg_hba.conf"),
            "hostssl all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        // Postgres reads its key only when its owner alone may.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            pg.data.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let owned = Command::new("chown")
            .arg("postgres")
            .args(["server.crt", "server.key", "pg_hba.conf"].map(|f| pg.data.join(f)))
            .status()
            .unwrap();
        assert!(owned.success());
        pg.options = " -c ssl=on".into();
        pg.start_again();
        pg
    }

    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the stopped server again (same data, same port).
    pub fn start_again(&self) {
        let ok = as_postgres(&format!(
            "{}/pg_ctl -D '{data}' -l '{data}/log' -w -o \"-p {port} -k '{data}' -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off{options}\" start",
            self.bin.display(),
            data = self.data.display(),
            port = self.port,
            options = self.options,
        ));
        assert!(ok, "pg_ctl start (log in {}/log)", self.data.display());
        wait_for("postgres", Duration::from_secs(30), || accepts(self.port));
    }

    /// Stops it as a crash does: no shutdown checkpoint, every session cut.
    pub fn crash(&self) {
        as_postgres(&format!(
            "{}/pg_ctl -D '{}' -m immediate -w stop",
            self.bin.display(),
            self.data.display()
        ));
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        self.crash();
    }
}

pub struct OwnRedis {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl OwnRedis {
    /// A Redis without persistence: a restart loses everything, as a cache node's would.
    pub fn start(dir: &Path) -> OwnRedis {
        let mut redis = OwnRedis {
            port: free_port(),
            dir: dir.join("redis"),
            child: None,
        };
        std::fs::create_dir_all(&redis.dir).unwrap();
        redis.start_again();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn start_again(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (run scripts/services.sh up)");
        self.child = Some(child);
        wait_for("redis", Duration::from_secs(10), || accepts(self.port));
    }

    /// SIGKILL: every connection cut, every key gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
