//! The sandbox on a real Docker engine: isolation, limits, clean-up.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use selfheal_engine::sandbox::{Images, Limits, Sandbox, LABEL};

async fn sandbox(limits: Limits) -> Sandbox {
    Sandbox::connect(Images::Recipe, limits)
        .await
        .expect("Docker (scripts/services.sh up; selfheal sandbox image)")
}

fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), "hello\n").unwrap();
    dir
}

#[tokio::test]
async fn the_sandbox_has_no_network() {
    let sb = sandbox(Limits::default()).await;
    let dir = repo();
    let (run, _) = sb
        .run(
            dir.path(),
            "python3 -c \"import socket; socket.create_connection(('1.1.1.1', 53), timeout=3)\"",
            None,
        )
        .await
        .unwrap();
    assert!(!run.passed());
    assert!(
        run.output.contains("Network is unreachable"),
        "{}",
        run.output
    );
    // The same machinery does run commands: it is the network that is missing.
    let (ok, _) = sb.run(dir.path(), "cat hello.txt", None).await.unwrap();
    assert!(ok.passed(), "{}", ok.output);
    assert_eq!(ok.output.trim(), "hello");
}

#[tokio::test]
async fn the_root_is_read_only_and_the_work_dir_writable() {
    let sb = sandbox(Limits::default()).await;
    let dir = repo();
    let (run, file) = sb
        .run(
            dir.path(),
            "touch /etc/owned; echo $? > /work/status; echo changed >> hello.txt",
            Some("repo/hello.txt"),
        )
        .await
        .unwrap();
    assert!(
        run.output.contains("Read-only file system"),
        "{}",
        run.output
    );
    assert_eq!(
        String::from_utf8(file.unwrap()).unwrap(),
        "hello\nchanged\n"
    );
    // The host's copy is untouched.
    assert_eq!(
        std::fs::read_to_string(dir.path().join("hello.txt")).unwrap(),
        "hello\n"
    );
}

#[tokio::test]
async fn the_repositorys_code_runs_unprivileged_with_no_capabilities() {
    let sb = sandbox(Limits::default()).await;
    let dir = repo();
    let (run, _) = sb
        .run(
            dir.path(),
            "id -u; grep CapEff /proc/self/status; grep CapBnd /proc/self/status; \
             touch /work/mine && echo work-writable; chown 0 hello.txt 2>&1 || echo no-chown",
            None,
        )
        .await
        .unwrap();
    let out = &run.output;
    assert!(out.lines().next() == Some("1000"), "{out}");
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("CapBnd:\t0000000000000000"), "{out}");
    assert!(out.contains("work-writable"), "{out}");
    assert!(out.contains("no-chown"), "{out}");
}

#[tokio::test]
async fn a_work_volume_over_its_limit_is_killed() {
    let sb = sandbox(Limits {
        work_bytes: 32 << 20,
        watch_interval: Duration::from_millis(500),
        ..Limits::default()
    })
    .await;
    let dir = repo();
    let started = Instant::now();
    let (run, _) = sb
        .run(
            dir.path(),
            "dd if=/dev/zero of=/work/fill bs=1M count=96 2>/dev/null; echo filled; sleep 60; echo survived",
            None,
        )
        .await
        .unwrap();
    assert!(run.disk_full, "{}", run.output);
    assert!(!run.passed());
    assert!(run.output.contains("filled"), "{}", run.output);
    assert!(!run.output.contains("survived"), "{}", run.output);
    assert!(started.elapsed() < Duration::from_secs(45));
    // Hiding the files in a directory nobody may read hides nothing.
    let (hidden, _) = sb
        .run(
            dir.path(),
            "mkdir /work/hide && dd if=/dev/zero of=/work/hide/f bs=1M count=96 2>/dev/null && chmod 000 /work/hide; sleep 60; echo survived",
            None,
        )
        .await
        .unwrap();
    assert!(hidden.disk_full, "{}", hidden.output);
    // A build's private directories (rustc makes 0700 ones) are no reason to stop it.
    let (private, _) = sb
        .run(
            dir.path(),
            "mkdir -m 700 /work/tmp-build && dd if=/dev/zero of=/work/tmp-build/f bs=1M count=4 2>/dev/null && chmod 000 /work/tmp-build; sleep 3; echo ok",
            None,
        )
        .await
        .unwrap();
    assert!(private.passed() && !private.disk_full, "{}", private.output);
    // Under the limit, the same writes are fine.
    let (ok, _) = sb
        .run(
            dir.path(),
            "dd if=/dev/zero of=/work/fill bs=1M count=8 2>/dev/null; sleep 2; echo ok",
            None,
        )
        .await
        .unwrap();
    assert!(ok.passed() && !ok.disk_full, "{}", ok.output);
}

#[tokio::test]
async fn the_memory_limit_kills() {
    let sb = sandbox(Limits {
        memory_bytes: 64 << 20,
        ..Limits::default()
    })
    .await;
    let dir = repo();
    let (run, _) = sb
        .run(
            dir.path(),
            "python3 -c \"x = bytearray(512 * 1024 * 1024); print('survived')\"",
            None,
        )
        .await
        .unwrap();
    assert!(
        run.oom_killed,
        "exit {} output {}",
        run.exit_code, run.output
    );
    assert!(!run.output.contains("survived"));
    assert!(!run.passed());
}

#[tokio::test]
async fn the_timeout_kills() {
    let sb = sandbox(Limits {
        timeout: Duration::from_secs(2),
        ..Limits::default()
    })
    .await;
    let dir = repo();
    let started = Instant::now();
    let (run, _) = sb
        .run(dir.path(), "echo started; sleep 120; echo finished", None)
        .await
        .unwrap();
    assert!(run.timed_out);
    assert!(!run.passed());
    assert!(
        run.output.contains("started") && !run.output.contains("finished"),
        "{}",
        run.output
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "killed, not waited out"
    );
}

#[tokio::test]
async fn the_pids_limit_holds() {
    let sb = sandbox(Limits {
        pids: 32,
        ..Limits::default()
    })
    .await;
    let dir = repo();
    let (run, _) = sb
        .run(
            dir.path(),
            "for i in $(seq 100); do sleep 5 & done 2>&1 | tail -1; echo spawned",
            None,
        )
        .await
        .unwrap();
    assert!(
        run.output.contains("Resource temporarily unavailable") || run.output.contains("fork"),
        "{}",
        run.output
    );
}

fn labelled_containers(docker_filter_pid: u32) -> usize {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter"])
        .arg(format!("label={LABEL}.pid={docker_filter_pid}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[tokio::test]
async fn a_run_given_up_mid_way_leaves_no_container_behind() {
    // A stage past its limit drops its work mid-way; the worker lives on, so no sweep of dead
    // workers' containers would ever come for this one.
    let sb = sandbox(Limits::default()).await;
    let dir = repo();
    let me = std::process::id();
    tokio::select! {
        _ = sb.run(dir.path(), "sleep 300", None) => panic!("sleep 300 ended early"),
        _ = async {
            while labelled_containers(me) == 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        } => {}
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while labelled_containers(me) > 0 {
        assert!(
            Instant::now() < deadline,
            "the given-up run's container is still there"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_container_left_by_a_killed_worker_is_removed() {
    let dir = repo();
    let mut child = Command::new(env!("CARGO_BIN_EXE_selfheal"))
        .args(["sandbox", "run", "--repo"])
        .arg(dir.path())
        .args(["--", "sleep 300"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    while labelled_containers(pid) == 0 {
        assert!(
            Instant::now() < deadline,
            "the sandbox container never started"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    // The next worker to start sweeps what dead processes left behind.
    let _ = sandbox(Limits::default()).await;
    assert_eq!(labelled_containers(pid), 0);
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
}

/// `docker …`, which must succeed.
fn docker_cli(args: &[&str]) {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Debian's docker-registry on a loopback port, stopped when dropped.
struct Registry(std::process::Child);

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn an_own_image_the_engine_lacks_is_pulled_from_its_registry() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("storage").display()
        ),
    )
    .unwrap();
    let _registry = Registry(
        Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (scripts/services.sh up installs it)"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the registry did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A one-file image, pushed to the registry and gone from the engine.
    let rootfs = repo();
    let tarball = dir.path().join("tiny.tar");
    let packed = Command::new("tar")
        .arg("-cf")
        .arg(&tarball)
        .arg("-C")
        .arg(rootfs.path())
        .arg(".")
        .status()
        .unwrap();
    assert!(packed.success());
    let nonce = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let image = format!("127.0.0.1:{port}/selfheal-test/tiny:{nonce}");
    docker_cli(&["import", tarball.to_str().unwrap(), &image]);
    docker_cli(&["push", &image]);
    docker_cli(&["rmi", &image]);

    let docker = bollard::Docker::connect_with_local_defaults()
        .unwrap()
        .negotiate_version()
        .await
        .unwrap();
    use selfheal_engine::sandbox::{ensure_image, Language};
    let got = ensure_image(&docker, &Images::Own(image.clone()), Language::Rust)
        .await
        .unwrap();
    assert_eq!(got, image);
    assert!(
        docker.inspect_image(&image).await.is_ok(),
        "the engine has it now"
    );
    docker_cli(&["rmi", &image]);

    let absent = format!("127.0.0.1:{port}/selfheal-test/absent:{nonce}");
    let err = ensure_image(&docker, &Images::Own(absent.clone()), Language::Rust)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&absent), "{err}");
}
